"""Celery, tenant-aware: a task runs in the schema of the tenant that queued it."""

import os
from typing import Any

from celery.signals import beat_init, worker_process_init
from tenant_schemas_celery.app import CeleryApp

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = CeleryApp("chatplatform")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_process_init.connect
def _trace_worker(**kwargs: Any) -> None:
    # In each worker process after the fork: the span exporter's thread must be the child's own.
    # A task's span continues the trace of the request that queued it (context in its headers).
    from config.tracing import configure_tracing

    configure_tracing("chat-platform-worker")


@beat_init.connect
def _trace_beat(**kwargs: Any) -> None:
    from config.tracing import configure_tracing

    configure_tracing("chat-platform-beat")
