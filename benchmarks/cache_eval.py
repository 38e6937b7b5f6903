"""Evaluate the semantic cache on labelled pairs: store a, ask b, count right hits, wrong hits, misses.

    python manage.py cache_eval --file pairs.jsonl
    .venv/bin/python benchmarks/cache_eval.py --file ../shared/data/semantic-cache/meancache_qqp_test.csv

Formats (by extension, or --format): JSONL lines {"a": ..., "b": ..., "same": true|false}, with
optional "a_context"/"b_context" lists of {"role", "content"} messages sent before the query;
Quora CSV (question1, question2, is_duplicate); PAWS TSV (id, sentence1, sentence2, label);
GPTCache's .json.gz ({text_a, text_b, label}); MeanCache's contextual .json (the follow-up, asked
in its conversation, must not get the main query's answer).

Every pair runs through the real service (cache_store, then cache_lookup: exact layer, pgvector
search in a tenant schema, guards) in a scope of its own, so pairs never see each other. Lookups
run once at the lowest threshold of the sweep: a hit at threshold t is a hit whose similarity is at
least t (the guards do not depend on t), so one pass gives every row of the table.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import os
import random
import statistics
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "semantic-cache"
SWEEP = [0.80, 0.85, 0.88, 0.90, 0.91, 0.92, 0.93, 0.94, 0.95, 0.97]


@dataclass
class Pair:
    a: str
    b: str
    same: bool
    a_context: list[dict[str, str]] = field(default_factory=list)
    b_context: list[dict[str, str]] = field(default_factory=list)


def _contextual(items: list[dict[str, str]]) -> list[Pair]:
    pairs = []
    for item in items:
        main, follow = item["Main Query"], item["Follow-Up Query"]
        context = [
            {"role": "user", "content": main},
            {"role": "assistant", "content": item["Main Query Response"]},
        ]
        # The follow-up, asked in its conversation, must not get the main query's answer...
        pairs.append(Pair(main, follow, False, b_context=context))
        # ...nor the answer it got in that conversation when asked without it.
        pairs.append(Pair(follow, follow, False, a_context=context))
    return pairs


def load_pairs(path: Path, fmt: str = "auto") -> list[Pair]:
    name = path.name.lower()
    if fmt == "auto":
        fmt = (
            "jsonl" if name.endswith(".jsonl") else "qqp" if name.endswith(".csv") else "paws"
            if name.endswith(".tsv") else "gptcache" if name.endswith(".json.gz") else "contextual"
        )  # fmt: skip
    if fmt == "jsonl":
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        return [
            Pair(r["a"], r["b"], bool(r["same"]), r.get("a_context", []), r.get("b_context", []))
            for r in rows
        ]
    if fmt == "qqp":
        with path.open(newline="") as handle:
            return [
                Pair(r["question1"], r["question2"], r["is_duplicate"] == "1") for r in csv.DictReader(handle)
            ]
    if fmt == "paws":
        with path.open(newline="") as handle:
            return [Pair(r[1], r[2], r[3] == "1") for r in csv.reader(handle, delimiter="\t") if len(r) == 4]
    if fmt == "gptcache":
        with gzip.open(path, "rt") as handle:
            return [Pair(r["text_a"], r["text_b"], int(r["label"]) == 1) for r in json.load(handle)]
    if fmt == "contextual":
        return _contextual(json.loads(path.read_text()))
    raise SystemExit(f"unknown format {fmt!r}")


@dataclass
class Outcome:
    pair: Pair
    kind: str  # "exact" | "semantic" | "miss"
    similarity: float
    seconds: float


def _request(run: str, index: int, context: list[dict[str, str]], text: str) -> Any:
    from routing.types import ChatMessage, ChatRequest

    # A system prompt of its own puts each pair in a scope of its own.
    messages = [ChatMessage(role="system", content=f"cache-eval {run} pair {index}")]
    messages += [ChatMessage(role=m["role"], content=m["content"]) for m in context]  # type: ignore[arg-type]
    return ChatRequest(model="cache-eval", messages=[*messages, ChatMessage(role="user", content=text)])


def eval_tenant(slug: str) -> Any:
    from tenants.models import Tenant
    from tenants.services import tenant_create

    tenant = Tenant.objects.filter(slug=slug).first()
    if tenant is None:
        print(f"creating tenant '{slug}' for the evaluation (one-off: makes its schema)", flush=True)
        tenant = tenant_create(name="Cache evaluation", slug=slug)
    return tenant


async def run_pairs(tenant: Any, pairs: list[Pair], lowest: float) -> list[Outcome]:
    from routing.cache.service import cache_drain, cache_lookup, cache_store
    from routing.types import Usage

    tenant.cache_enabled, tenant.semantic_cache_threshold = True, lowest
    tenant.cache_ttl_seconds = max(tenant.cache_ttl_seconds, 3600)
    run = uuid.uuid4().hex[:8]
    usage, outcomes = Usage(prompt_tokens=50, completion_tokens=200), []
    for index, pair in enumerate(pairs):
        stored = await cache_store(
            tenant,
            _request(run, index, pair.a_context, pair.a),
            "cache-eval",
            f"answer {index}",
            usage,
            Decimal(0),
        )
        if stored is None:
            raise SystemExit(f"pair {index}: the cache refused to store a (is the cache enabled?)")
        started = time.perf_counter()
        hit, status = await cache_lookup(
            tenant, _request(run, index, pair.b_context, pair.b), "cache-eval", True
        )
        seconds = time.perf_counter() - started
        outcomes.append(Outcome(pair, status if hit else "miss", hit.similarity if hit else 0.0, seconds))
        if index % 500 == 499:
            print(f"  {index + 1}/{len(pairs)}", file=sys.stderr, flush=True)
    await cache_drain()
    return outcomes


def _row(outcomes: list[Outcome], threshold: float) -> dict[str, float]:
    right = sum(1 for o in outcomes if o.kind != "miss" and o.similarity >= threshold and o.pair.same)
    wrong = sum(1 for o in outcomes if o.kind != "miss" and o.similarity >= threshold and not o.pair.same)
    same = sum(1 for o in outcomes if o.pair.same)
    different = len(outcomes) - same
    return {
        "threshold": threshold,
        "right_hits": right,
        "wrong_hits": wrong,
        "misses": len(outcomes) - right - wrong,
        "precision": right / (right + wrong) if right + wrong else 1.0,
        "recall": right / same if same else 0.0,
        "false_hit_rate": wrong / different if different else 0.0,
    }


def report(outcomes: list[Outcome], default: float, source: str) -> dict[str, Any]:
    from routing.cache.guards import analyse, near_miss_reason

    same = sum(1 for o in outcomes if o.pair.same)
    at_default = _row(outcomes, default)
    # Why misses were misses (diagnostic only: the decision is the service's own).
    refused: dict[str, Counter[str]] = {"same": Counter(), "different": Counter()}
    for o in outcomes:
        if o.kind == "miss":
            reason = near_miss_reason(analyse(o.pair.b), analyse(o.pair.a)) or "similarity/alignment/scope"
            refused["same" if o.pair.same else "different"][reason] += 1
    latencies = sorted(o.seconds * 1000 for o in outcomes)
    layers = Counter(o.kind for o in outcomes if o.kind != "miss" and o.similarity >= default)
    print(f"\n{source}: {len(outcomes)} pairs, {same} same, {len(outcomes) - same} different")
    print(
        f"default threshold {default:.2f}: right hits {at_default['right_hits']}, wrong hits {at_default['wrong_hits']}, "
        f"misses {at_default['misses']} | precision {at_default['precision']:.4f}, recall {at_default['recall']:.4f}, "
        f"false-hit rate {at_default['false_hit_rate']:.4f} | hits by layer {dict(layers)}"
    )
    print(f"misses by first guard that objects: different pairs {dict(refused['different'].most_common())}")
    print(f"                                    same pairs      {dict(refused['same'].most_common())}")
    print("\n threshold  right  wrong  misses  precision  recall  false-hit-rate")
    rows = [_row(outcomes, t) for t in SWEEP]
    for r in rows:
        print(
            f"   {r['threshold']:.2f}   {r['right_hits']:6d} {r['wrong_hits']:6d} {r['misses']:7d}   "
            f"{r['precision']:.4f}   {r['recall']:.4f}   {r['false_hit_rate']:.4f}"
        )
    p95 = latencies[int(0.95 * (len(latencies) - 1))] if latencies else 0.0
    median = statistics.median(latencies) if latencies else 0.0
    print(f"\nlookup latency in-process (embedding + search + guards): p50 {median:.1f} ms, p95 {p95:.1f} ms")
    return {"source": source, "pairs": len(outcomes), "default": at_default, "sweep": rows,
            "lookup_ms_p50": median, "lookup_ms_p95": p95}  # fmt: skip


def evaluate(
    path: Path, *, fmt: str = "auto", limit: int | None = None, seed: int = 0, tenant_slug: str = "cache-eval",
    cosine_only: bool = False, json_out: Path | None = None, keep: bool = False,
) -> dict[str, Any]:  # fmt: skip
    from asgiref.sync import async_to_sync
    from django.conf import settings
    from django.test import override_settings

    from routing.cache.service import purge_tenant_cache

    pairs = load_pairs(path, fmt)
    if limit is not None and limit < len(pairs):
        pairs = random.Random(seed).sample(pairs, limit)
    tenant = eval_tenant(tenant_slug)
    default = float(settings.SEMANTIC_CACHE_THRESHOLD)
    overrides = {"CACHE_NEAR_MISS_GUARDS": False, "CACHE_ALIGNMENT_FLOOR": 0.0} if cosine_only else {}
    print(
        f"evaluating {len(pairs)} pairs from {path.name}"
        + (" (cosine only: guards off)" if cosine_only else "")
    )
    try:
        with override_settings(**overrides):
            outcomes = async_to_sync(run_pairs)(tenant, pairs, min(SWEEP[0], default))
    finally:
        if not keep:
            purge_tenant_cache(tenant)
    result = report(outcomes, default, path.name + (" [cosine only]" if cosine_only else ""))
    if json_out:
        json_out.write_text(json.dumps(result, indent=2))
    return result


def add_arguments(parser: argparse.ArgumentParser | Any) -> None:
    parser.add_argument("--file", type=Path, required=True, help="pairs file (see the formats above)")
    parser.add_argument(
        "--format", default="auto", choices=["auto", "jsonl", "qqp", "paws", "gptcache", "contextual"]
    )
    parser.add_argument("--limit", type=int, help="a random sample of this many pairs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--tenant", default="cache-eval", help="tenant to run in (made if missing; its cache is purged)"
    )
    parser.add_argument(
        "--cosine-only", action="store_true", help="guards and word alignment off, for comparison"
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--keep", action="store_true", help="leave the stored entries in place")


def run_from_options(options: dict[str, Any]) -> None:
    evaluate(
        options["file"], fmt=options["format"], limit=options["limit"], seed=options["seed"],
        tenant_slug=options["tenant"], cosine_only=options["cosine_only"], json_out=options["json"],
        keep=options["keep"],
    )  # fmt: skip


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import django

    django.setup()
    cli = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(cli)
    run_from_options(vars(cli.parse_args()))
