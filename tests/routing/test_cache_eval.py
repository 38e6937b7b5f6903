"""The evaluation command end to end on a small JSONL file of labelled pairs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.core.management import call_command
from django_tenants.utils import schema_context

from routing.models import CacheEntry
from tests.conftest import World

PAIRS = [
    {"a": "How do I convert km to miles?", "b": "How can I convert km to miles?", "same": True},
    {"a": "What is the capital of France?", "b": "what's the capital of france", "same": True},
    {"a": "How do I convert km to miles?", "b": "How do I convert miles to km?", "same": False},
    {"a": "How do I reverse a list in Python?", "b": "How do I reverse a list in Java?", "same": False},
    {"a": "What is 15% of 200?", "b": "What is 20% of 200?", "same": False},
    {
        "a": "and in Germany?",
        "a_context": [
            {"role": "user", "content": "VAT rate in France?"},
            {"role": "assistant", "content": "20%"},
        ],
        "b": "and in Germany?",
        "b_context": [
            {"role": "user", "content": "VAT rate in Spain?"},
            {"role": "assistant", "content": "21%"},
        ],
        "same": False,
    },
]


def test_cache_eval_counts_right_and_wrong_hits(
    db: None, world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(json.dumps(p) for p in PAIRS))
    call_command("cache_eval", file=path, tenant="acme", json=tmp_path / "out.json")
    out = capsys.readouterr().out
    assert "6 pairs, 2 same, 4 different" in out
    result = json.loads((tmp_path / "out.json").read_text())
    assert result["default"]["right_hits"] == 2 and result["default"]["wrong_hits"] == 0
    assert result["default"]["false_hit_rate"] == 0.0 and result["default"]["recall"] == 1.0
    with schema_context(world.acme.tenant.schema_name):
        assert not CacheEntry.objects.exists()  # the evaluation cleans up after itself
