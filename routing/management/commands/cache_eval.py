"""`python manage.py cache_eval --file pairs.jsonl`: the semantic cache's precision, recall and
false-hit rate on labelled pairs (benchmarks/cache_eval.py does the work; see its docstring)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from benchmarks import cache_eval


class Command(BaseCommand):
    help = "Evaluate the semantic cache on labelled pairs: store a, ask b, count right/wrong hits and misses."

    def add_arguments(self, parser: CommandParser) -> None:
        cache_eval.add_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        cache_eval.run_from_options(options)
