"""The public schema's "billing" group, whose members read every tenant's usage and invoices."""

from typing import Any

from django.db import migrations


def create_group(apps: Any, schema_editor: Any) -> None:
    apps.get_model("auth", "Group").objects.get_or_create(name="billing")


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0003_row_level_security_and_append_only_audit"),
        ("auth", "0012_alter_user_first_name_max_length"),
    ]

    operations = [
        # The hint routes this to the public schema only (tenants have their own auth tables).
        migrations.RunPython(create_group, migrations.RunPython.noop, hints={"model_name": "dailyusage"}),
    ]
