from django.db import migrations
from pgvector.django import VectorExtension


class Migration(migrations.Migration):
    """pgvector, database-wide (created in public, visible from every tenant schema)."""

    initial = True
    dependencies: list[tuple[str, str]] = []
    operations = [VectorExtension()]
