"""Replay mixed traffic through the cache: hit rate, wrong answers served, cost saved.

    .venv/bin/python benchmarks/cache_replay.py                       # 2,000 requests, seed 1
    .venv/bin/python benchmarks/cache_replay.py --thresholds 0.85,0.90,0.93
    .venv/bin/python benchmarks/cache_replay.py --split tune          # what tuning may look at

The traffic is built from ../shared/data/semantic-cache/. The cache is tuned on
meancache_qqp_val.csv, and every one of its questions also occurs in GPTCache's Quora set, so by
default (--split heldout) the replay takes only Quora families none of whose questions is in
that file; --split tune takes only families with one there, --split all any (the construction
before the split existed).
- about 30 percent paraphrase an earlier request: Quora duplicates from GPTCache's set;
- about 20 percent are near misses of an earlier request: Quora non-duplicates from the same set
  that share at least half their words with it (they look alike), and MeanCache's contextual
  follow-ups asked inside their conversation;
- the rest are unique real prompts: the originals of those pairs and ShareGPT first prompts
  (with ShareGPT's own exact repeats, as they come). A pair is taken only if none of its texts
  shares half its words with a text taken before (a word count, not our model, decides), so
  that "unique" prompts are unique and topic collisions do not pass for cache errors.
Each request is answered from the cache or by a simulated upstream whose answer is then stored;
an answer served from the cache is right when it was given to the same question: the same text
(case and spacing folded) or a labelled duplicate of it, transitively (Quora merges duplicates);
anything else counts as wrong, unlabelled look-alikes included. Cost uses the pricing
table of `sync_model_catalog` and the tokenizer estimate of the gateway.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import os
import random
import re
import statistics
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "semantic-cache"
_WORDS = re.compile(r"[a-z0-9]+")


@dataclass
class Request:
    text: str
    group: int  # requests of one group may share an answer
    kind: str  # original | paraphrase | near_miss | unique
    context: list[dict[str, str]] = field(default_factory=list)
    at: float = 0.0


def _overlap(a: str, b: str) -> float:
    wa, wb = set(_WORDS.findall(a.lower())), set(_WORDS.findall(b.lower()))
    return len(wa & wb) / max(1, len(wa | wb))


class Clusters:
    """Questions that share an answer: the same text (case and spacing folded) or, transitively,
    labelled duplicates of each other (Quora merges duplicates into one question)."""

    def __init__(self) -> None:
        self.parent: dict[str, str] = {}
        self.ids: dict[str, int] = {}

    @staticmethod
    def key(text: str) -> str:
        return " ".join(text.lower().split())

    def find(self, text: str) -> str:
        key = self.key(text)
        self.parent.setdefault(key, key)
        while self.parent[key] != key:
            self.parent[key] = self.parent[self.parent[key]]
            key = self.parent[key]
        return key

    def union(self, a: str, b: str) -> None:
        self.parent[self.find(a)] = self.find(b)

    def group(self, text: str) -> int:
        return self.ids.setdefault(self.find(text), len(self.ids) + 1)


def _tuning_texts() -> set[str]:
    """Every question of the tuning file (meancache_qqp_val.csv), case and spacing folded."""
    with (DATA / "meancache_qqp_val.csv").open(newline="") as handle:
        return {Clusters.key(r[k]) for r in csv.DictReader(handle) for k in ("question1", "question2")}


def build_traffic(total: int, seed: int, split: str = "all") -> tuple[list[Request], set[tuple[str, str]]]:
    """The requests in order, and the pairs labelled "not duplicates" (never a right answer,
    whatever transitivity says). `split`: "heldout" takes only Quora families none of whose
    questions is in the tuning file, "tune" only families with one there, "all" any."""
    rng = random.Random(seed)
    tuning = _tuning_texts() if split != "all" else set()
    with gzip.open(DATA / "gptcache_similiar_qqp_full.json.gz", "rt") as handle:
        quora = json.load(handle)
    contextual = json.loads((DATA / "meancache_contextual_queries.json").read_text())
    sharegpt = [
        c["conversations"][0]["value"]
        for c in json.loads((DATA / "sharegpt_first_prompts_mlenergy.json").read_text())
    ]
    clusters = Clusters()
    positives: dict[str, list[str]] = defaultdict(list)
    negatives: dict[str, list[str]] = defaultdict(list)
    labelled_different: set[tuple[str, str]] = set()
    for row in quora:
        a, b = clusters.key(row["text_a"]), clusters.key(row["text_b"])
        if a == b:
            continue
        if int(row["label"]) == 1:
            positives[row["text_a"]].append(row["text_b"])
            clusters.union(row["text_a"], row["text_b"])
        else:
            labelled_different |= {(a, b), (b, a)}
            if _overlap(row["text_a"], row["text_b"]) >= 0.5:
                negatives[row["text_a"]].append(row["text_b"])
    n_para, n_near = round(0.30 * total), round(0.20 * total)
    n_context = min(len(contextual), n_near // 10)
    quota = Counter({"paraphrase": n_para, "near_miss": n_near - n_context})
    both = sorted(a for a in positives if a in negatives)
    only_pos = sorted(a for a in positives if a not in negatives)
    only_neg = sorted(a for a in negatives if a not in positives)
    for candidates in (both, only_pos, only_neg):
        rng.shuffle(candidates)
    requests: list[Request] = []
    chosen = _Unique()
    for a in both + only_pos + only_neg:
        family = [(a, "original")]
        if a in positives and quota["paraphrase"] > 0:
            family.append((rng.choice(positives[a]), "paraphrase"))
        if a in negatives and quota["near_miss"] > 0:
            family.append((rng.choice(negatives[a]), "near_miss"))
        # "Unique" prompts must be unique: a family that looks like an earlier one (half its
        # words shared) would turn unlabelled duplicates into "wrong" answers.
        if len(family) == 1:
            continue
        if split != "all":
            touches = any(Clusters.key(text) in tuning for text, _ in family)
            if touches != (split == "tune"):
                continue
        if not chosen.add([text for text, _ in family]):
            continue
        original = Request(a, clusters.group(a), "original", at=rng.random())
        requests.append(original)
        for text, kind in family[1:]:
            requests.append(Request(text, clusters.group(text), kind, at=_later(rng, original.at)))
            quota[kind] -= 1
        if quota["paraphrase"] <= 0 and quota["near_miss"] <= 0:
            break
    for item in rng.sample(contextual, n_context):
        main = Request(item["Main Query"], clusters.group(item["Main Query"]), "original", at=rng.random())
        context = [{"role": "user", "content": item["Main Query"]},
                   {"role": "assistant", "content": item["Main Query Response"]}]  # fmt: skip
        follow = item["Follow-Up Query"]
        requests += [
            main,
            Request(follow, clusters.group(follow), "near_miss", context, at=_later(rng, main.at)),
        ]
    # ShareGPT fills the rest, its own exact repeats included (same text, same group).
    for text in rng.sample(sharegpt, max(0, total - len(requests))):
        requests.append(Request(text, clusters.group(text), "unique", at=rng.random()))
    return sorted(requests, key=lambda r: r.at), labelled_different


class _Unique:
    """Texts chosen so far, by word, to refuse a new family that shares half its words with one."""

    def __init__(self) -> None:
        self.words: list[set[str]] = []
        self.index: dict[str, set[int]] = defaultdict(set)

    def add(self, texts: list[str]) -> bool:
        new = [set(_WORDS.findall(t.lower())) for t in texts]
        for words in new:
            seen = set().union(*(self.index.get(w, set()) for w in words))
            if any(len(words & self.words[i]) / max(1, len(words | self.words[i])) >= 0.5 for i in seen):
                return False
        for words in new:
            for w in words:
                self.index[w].add(len(self.words))
            self.words.append(words)
        return True


def _later(rng: random.Random, after: float) -> float:
    return after + (1.0 - after) * rng.random()


@dataclass
class Tally:
    served: Counter[str] = field(default_factory=Counter)  # by layer
    right: int = 0
    wrong: list[tuple[str, str, str, float]] = field(default_factory=list)  # kind, asked, cached, similarity
    by_kind: Counter[str] = field(default_factory=Counter)
    hits_by_kind: Counter[str] = field(default_factory=Counter)
    cost_all: Decimal = Decimal(0)
    cost_saved: Decimal = Decimal(0)
    hit_ms: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    miss_ms: list[float] = field(default_factory=list)


async def replay(
    tenant: Any,
    traffic: list[Request],
    different: set[tuple[str, str]],
    threshold: float,
    model: str,
    answer_tokens: int,
) -> Tally:
    from routing.cache.service import cache_drain, cache_lookup, cache_store
    from routing.pricing import compute_cost
    from routing.providers.tokens import estimate_tokens
    from routing.types import ChatMessage, ChatRequest, Usage

    target = pricing_target(model)
    tenant.cache_enabled, tenant.semantic_cache_threshold = True, threshold
    tenant.cache_ttl_seconds = max(tenant.cache_ttl_seconds, 86_400)
    tally = Tally()
    first_text: dict[int, str] = {}
    for request in traffic:
        messages = [ChatMessage(role=m["role"], content=m["content"]) for m in request.context]  # type: ignore[arg-type]
        chat = ChatRequest(model=model, messages=[*messages, ChatMessage(role="user", content=request.text)])
        usage = Usage(
            prompt_tokens=sum(estimate_tokens(m.text()) + 4 for m in chat.messages),
            completion_tokens=answer_tokens,
        )
        cost = compute_cost(target, usage)
        tally.cost_all += cost
        tally.by_kind[request.kind] += 1
        started = time.perf_counter()
        hit, _status = await cache_lookup(tenant, chat, model, True)
        elapsed_ms = (time.perf_counter() - started) * 1000
        if hit is None:
            tally.miss_ms.append(elapsed_ms)
            await cache_store(tenant, chat, model, f"answer of group {request.group}", usage, cost)
            first_text.setdefault(request.group, request.text)
            continue
        tally.hit_ms[hit.kind].append(elapsed_ms)
        tally.served[hit.kind] += 1
        tally.hits_by_kind[request.kind] += 1
        tally.cost_saved += hit.saved_cost
        served = first_text.get(int(hit.text.rsplit(" ", 1)[-1]), "?")
        pair = (Clusters.key(request.text), Clusters.key(served))
        if hit.text == f"answer of group {request.group}" and pair not in different:
            tally.right += 1
        else:
            tally.wrong.append((request.kind, request.text, served, hit.similarity))
    await cache_drain()
    return tally


def pricing_target(model: str) -> Any:
    from routing.management.commands.sync_model_catalog import ANTHROPIC_MODELS, OPENAI_MODELS
    from routing.types import ModelTarget

    for name, upstream, _family, tier, context, _vision, _logprobs, p_in, p_out, p_cached in (
        OPENAI_MODELS + ANTHROPIC_MODELS
    ):
        if name == model:
            return ModelTarget(
                name=name, provider="pricing", kind="openai", upstream_model=upstream, base_url="", quality_tier=tier,
                context_window=context, input_price_per_mtok=p_in, output_price_per_mtok=p_out,
                cached_input_price_per_mtok=p_cached,
            )  # fmt: skip
    raise SystemExit(f"{model} is not in the pricing table")


def _p95(values: list[float]) -> float:
    return sorted(values)[int(0.95 * (len(values) - 1))] if values else 0.0


def print_tally(tally: Tally, threshold: float, total: int) -> dict[str, Any]:
    hits = sum(tally.served.values())
    wrong = len(tally.wrong)
    right_share = tally.right / hits if hits else 1.0
    print(f"\nthreshold {threshold:.2f}: {total} requests {dict(tally.by_kind)}")
    print(
        f"  answered from cache: {hits} ({hits / total:.1%}) {dict(tally.served)}; right {tally.right}, "
        f"wrong {wrong} -> {right_share:.2%} of cache answers right"
    )
    print(f"  hits by request kind: {dict(tally.hits_by_kind)}")
    print(
        f"  cost: ${tally.cost_all:.4f} without cache, ${tally.cost_saved:.4f} saved "
        f"({(tally.cost_saved / tally.cost_all if tally.cost_all else 0):.1%})"
    )
    for layer, values in tally.hit_ms.items():
        print(
            f"  {layer} hit lookup in-process: p50 {statistics.median(values):.2f} ms, p95 {_p95(values):.2f} ms"
        )
    if tally.miss_ms:
        print(
            f"  miss lookup in-process: p50 {statistics.median(tally.miss_ms):.2f} ms, p95 {_p95(tally.miss_ms):.2f} ms"
        )
    for kind, asked, cached, similarity in tally.wrong[:40]:
        print(
            f"  WRONG ({kind}, {similarity:.3f}): asked {asked[:80]!r}, served the answer to {cached[:80]!r}"
        )
    return {
        "threshold": threshold, "requests": total, "hits": hits, "hit_rate": hits / total if total else 0.0,
        "right": tally.right, "wrong": wrong, "right_share": right_share, "by_layer": dict(tally.served),
        "cost_without_cache": str(tally.cost_all), "cost_saved": str(tally.cost_saved),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--split",
        choices=["heldout", "tune", "all"],
        default="heldout",
        help="Quora families: none of whose questions (heldout) or one of whose questions (tune) is "
        "in meancache_qqp_val.csv, the file the cache is tuned on; all: any",
    )
    parser.add_argument("--thresholds", help="comma-separated; default: the tenant default setting")
    parser.add_argument("--model", default="gpt-4o", help="priced from sync_model_catalog's table")
    parser.add_argument("--answer-tokens", type=int, default=350, help="completion tokens of each answer")
    parser.add_argument("--tenant", default="cache-replay")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import django

    django.setup()
    from asgiref.sync import async_to_sync
    from django.conf import settings

    from routing.cache.service import purge_tenant_cache

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from cache_eval import eval_tenant

    traffic, different = build_traffic(args.requests, args.seed, args.split)
    thresholds = (
        [float(t) for t in args.thresholds.split(",")]
        if args.thresholds
        else [settings.SEMANTIC_CACHE_THRESHOLD]
    )
    tenant = eval_tenant(args.tenant)
    results = []
    for threshold in thresholds:
        purge_tenant_cache(tenant)
        try:
            tally = async_to_sync(replay)(
                tenant, traffic, different, threshold, args.model, args.answer_tokens
            )
        finally:
            purge_tenant_cache(tenant)
        results.append(print_tally(tally, threshold, len(traffic)))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
