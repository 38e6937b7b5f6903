"""Observability fixtures: spans in memory, and web processes of our own (to scrape, to read
their console spans, and to stop with SIGTERM), separate from the suite's shared live server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from config.tracing import DatastoreCallsNeedAParent, instrument_libraries, uninstrument_libraries

ROOT = Path(__file__).resolve().parents[2]


class _Switchable(InMemorySpanExporter):
    """Keeps spans only while a test listens: the provider is process-wide and outlives tests."""

    listening = False

    def export(self, spans: Any) -> SpanExportResult:
        return super().export(spans) if self.listening else SpanExportResult.SUCCESS


_exporter = _Switchable()


_attached: list[TracerProvider] = []


def _provider() -> TracerProvider:
    """The process' SDK provider (made here unless config.tracing made one), exporting to
    `_exporter` once."""
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        from opentelemetry.sdk.trace.sampling import ALWAYS_ON

        trace.set_tracer_provider(TracerProvider(sampler=DatastoreCallsNeedAParent(ALWAYS_ON)))
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    if provider not in _attached:
        provider.add_span_processor(SimpleSpanProcessor(_exporter))
        _attached.append(provider)
    return provider


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Django, Redis, Celery and the database instrumented for one test; its spans in memory."""
    _provider()
    instrument_libraries()
    _exporter.clear()
    _exporter.listening = True
    try:
        yield _exporter
    finally:
        _exporter.listening = False
        _exporter.clear()
        uninstrument_libraries()


def children(all_spans: list[ReadableSpan], parent: ReadableSpan) -> list[ReadableSpan]:
    assert parent.context is not None
    return [s for s in all_spans if s.parent is not None and s.parent.span_id == parent.context.span_id]


def one(all_spans: list[ReadableSpan], name: str) -> ReadableSpan:
    found = [s for s in all_spans if s.name == name]
    assert len(found) == 1, (name, [s.name for s in all_spans])
    return found[0]


# --- web processes of our own --------------------------------------------------------------


@dataclass
class WebProcess:
    url: str
    port: int
    process: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def launch_web(directory: Path, name: str, server: str = "daphne", **env: str) -> WebProcess:
    """Starts daphne, or uvicorn as `make run` and the chart serve the app, on the test database,
    with extra environment."""
    from django.conf import settings
    from django.db import connection

    db = connection.settings_dict
    database = f"postgresql://{db['USER'] or 'postgres'}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    port = _free_port()
    out, err = directory / f"{name}.out", directory / f"{name}.err"
    full_env = {
        **os.environ,
        "DATABASE_URL": database,
        "PLATFORM_ENV": "test",
        "REDIS_KEY_PREFIX": settings.REDIS_KEY_PREFIX,
        "DEBUG": "0",
        "DJANGO_SETTINGS_MODULE": "config.settings",
        **env,
    }
    command = {
        "daphne": ["-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "config.asgi:application"],
        "uvicorn": ["-m", "uvicorn", "config.asgi:application", "--host", "127.0.0.1", "--port", str(port),
                    "--loop", "uvloop", "--http", "httptools", "--lifespan", "off"],
    }[server]  # fmt: skip
    process = subprocess.Popen(
        [sys.executable, *command],
        cwd=ROOT,
        env=full_env,
        stdout=out.open("wb"),
        stderr=err.open("wb"),
    )
    web = WebProcess(f"http://127.0.0.1:{port}", port, process, out, err)
    deadline = time.monotonic() + 40
    while True:
        try:
            urllib.request.urlopen(web.url + "/healthz", timeout=1)
            return web
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(f"web process did not start: {err.read_text()[-2000:]}") from None
            time.sleep(0.2)


def stop_all(processes: list[WebProcess]) -> None:
    for web in processes:
        if web.process.poll() is None:
            web.process.kill()
            web.process.wait(10)


@pytest.fixture
def start_web(gateway: Any, tmp_path: Path) -> Iterator[Callable[..., WebProcess]]:
    started: list[WebProcess] = []

    def start(**env: str) -> WebProcess:
        started.append(launch_web(tmp_path, f"web{len(started)}", **env))
        return started[-1]

    yield start
    stop_all(started)
