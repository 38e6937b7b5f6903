from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "billing"

    def ready(self) -> None:
        from billing.audit_events import connect_audit_receivers

        connect_audit_receivers()
