"""`python manage.py fake_upstream --port 9100 [--host 127.0.0.1] [--knobs JSON|@file]`."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from routing.fake_upstream.knobs import KnobError
from routing.fake_upstream.server import build_app, load_knobs, run_blocking


class Command(BaseCommand):
    help = "Serve the fake OpenAI/Anthropic/Ollama upstream used by tests and benchmarks."
    # It never touches the database, so it must start even when Postgres is down.
    requires_system_checks: list[str] = []
    requires_migrations_checks = False

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=9100, help="0 picks a free port (printed at start)")
        parser.add_argument("--knobs", help="JSON object or array of knob updates, or @path to a JSON file")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            knobs = load_knobs(options["knobs"])
            build_app(knobs)  # validate the knobs before binding the port
        except (json.JSONDecodeError, KnobError, OSError) as exc:
            raise CommandError(f"--knobs: {exc}") from exc

        def announce(line: str) -> None:
            self.stdout.write(line)
            self.stdout.flush()

        run_blocking(options["host"], options["port"], knobs, announce)
