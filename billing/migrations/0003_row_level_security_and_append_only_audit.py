"""Row-level security on the public reporting tables, and an append-only audit table.

Runs on the public schema only (the router sees the model name in the hints). See billing/rls.py
and docs/billing.md for the design.
"""

from django.conf import settings
from django.db import migrations

RLS_TABLES = ("billing_dailyusage", "billing_invoice", "billing_auditevent")

# Rows are visible when app.tenant_id names their tenant, or is '*' (platform and billing
# staff). Unset (NULL) or anything else matches nothing: forgetting to set it shows no rows.
POLICY = """
(CASE
   WHEN current_setting('app.tenant_id', true) = '*' THEN true
   WHEN current_setting('app.tenant_id', true) ~ '^[0-9]{1,18}$'
     THEN tenant_id = current_setting('app.tenant_id', true)::bigint
   ELSE false
 END)
"""


def _role() -> str:
    return settings.BILLING_REPORTING_DB_ROLE.replace('"', "")


def forwards_sql() -> list[str]:
    role = _role()
    statements = [
        f"""DO $$ BEGIN
              IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}') THEN
                CREATE ROLE "{role}" NOLOGIN NOSUPERUSER NOBYPASSRLS;
              END IF;
            END $$""",
        f'GRANT "{role}" TO CURRENT_USER',
        f'GRANT USAGE ON SCHEMA public TO "{role}"',
    ]
    for table in RLS_TABLES:
        statements += [
            f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY",
            # FORCE: the table's owner (the application's role in production) is subject too.
            f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY",
            f"CREATE POLICY tenant_isolation ON {table} USING {POLICY} WITH CHECK {POLICY}",
            f'GRANT SELECT ON {table} TO "{role}"',
        ]
    statements += [
        """CREATE FUNCTION billing_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN
             RAISE EXCEPTION 'the audit log is append-only (% refused)', TG_OP
               USING ERRCODE = 'insufficient_privilege';
           END $$""",
        """CREATE TRIGGER billing_audit_append_only
           BEFORE UPDATE OR DELETE ON billing_auditevent
           FOR EACH ROW EXECUTE FUNCTION billing_audit_append_only()""",
        """CREATE TRIGGER billing_audit_no_truncate
           BEFORE TRUNCATE ON billing_auditevent
           FOR EACH STATEMENT EXECUTE FUNCTION billing_audit_append_only()""",
    ]
    return statements


def backwards_sql() -> list[str]:
    role = _role()
    statements = [
        "DROP TRIGGER IF EXISTS billing_audit_no_truncate ON billing_auditevent",
        "DROP TRIGGER IF EXISTS billing_audit_append_only ON billing_auditevent",
        "DROP FUNCTION IF EXISTS billing_audit_append_only()",
    ]
    for table in RLS_TABLES:
        statements += [
            f'REVOKE SELECT ON {table} FROM "{role}"',
            f"DROP POLICY IF EXISTS tenant_isolation ON {table}",
            f"ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY",
            f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY",
        ]
    return statements


class Migration(migrations.Migration):
    dependencies = [("billing", "0002_ledger_rollups_invoices_audit")]

    operations = [
        migrations.RunSQL(
            forwards_sql(),
            backwards_sql(),
            # Routes this to the public schema only, like the tables it changes.
            hints={"model_name": "dailyusage"},
        ),
    ]
