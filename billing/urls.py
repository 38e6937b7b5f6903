"""The billing staff's pages, mounted at /billing/ on the public host."""

from django.contrib.auth import views as auth_views
from django.urls import path

from billing import views

urlpatterns = [
    path("", views.report, name="billing-report"),
    path("report.csv", views.report_csv, name="billing-report-csv"),
    path("invoices/", views.invoice_list, name="billing-invoices"),
    path("invoices/issue", views.invoice_issue, name="billing-invoices-issue"),
    path("invoices/export", views.invoices_export, name="billing-invoices-export"),
    path("invoices/<int:invoice_id>/send", views.invoice_send, name="billing-invoice-send"),
    path(
        "login",
        auth_views.LoginView.as_view(
            template_name="billing/login.html", redirect_authenticated_user=True, next_page="billing-report"
        ),
        name="billing-login",
    ),
    path("logout", auth_views.LogoutView.as_view(next_page="billing-login"), name="billing-logout"),
]
