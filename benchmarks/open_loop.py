"""Open-loop load at a fixed rate: what a gateway adds at a steady offered load.

    python benchmarks/open_loop.py --url http://127.0.0.1:8000/v1/chat/completions \
        --rate 50 --duration 60 --warmup 5 --label ours [--pids name=pid,...] [--json-out f.jsonl]
    python benchmarks/open_loop.py --report f.jsonl            # markdown tables, Δ vs `direct`
    python benchmarks/open_loop.py --passes f.jsonl --label ours --rate 200 --tag t \
        --max-p95-overhead 100                                 # exit 0 if that step passed

Unlike a closed loop (the shared peer loadgen), the sender does not wait for answers: request i
is due at t0 + i/rate (evenly spaced; --poisson for exponential gaps) and is sent then whatever
is still in flight, so a slow server meets a queue instead of a politely slowed client. Latency
is taken from the *due* time (no coordinated omission; the sender's own lateness is reported);
each run lasts at most warmup + duration + timeout seconds, and at most --max-inflight requests
are outstanding (a request due beyond that is counted as an error, `dropped`, and not sent).

Reported per run: achieved rate, errors by kind, client-side latency p50/p95/p99/max, and the
distributions of the gateways' own overhead headers: ours (`x-gateway-overhead-ms`) and
LiteLLM's (`x-litellm-overhead-duration-ms`). With --pids, CPU% of those processes (and their
children), of this generator, and of the rest of the machine (`other`), from /proc.
Non-streaming requests, the same body as /work/shared/bench/peer/loadgen.py.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import sys
import time

PAYLOAD = {
    "model": "gpt-4o-mini",
    "messages": [{"role": "user", "content": "Say hello in five words."}],
    "max_tokens": 32,
}
HEADERS = {"ours": "x-gateway-overhead-ms", "litellm": "x-litellm-overhead-duration-ms"}
CLK = os.sysconf("SC_CLK_TCK")


def pct(sorted_vals: list[float], p: float) -> float:
    if not sorted_vals:
        return float("nan")
    k = (len(sorted_vals) - 1) * p / 100.0
    f = int(k)
    c = min(f + 1, len(sorted_vals) - 1)
    return sorted_vals[f] + (sorted_vals[c] - sorted_vals[f]) * (k - f)


def summary(vals: list[float]) -> dict[str, float]:
    s = sorted(vals)
    if not s:
        return {"n": 0}
    return {"n": len(s), "mean": sum(s) / len(s), "p50": pct(s, 50), "p95": pct(s, 95),
            "p99": pct(s, 99), "min": s[0], "max": s[-1]}


def proc_cpu_ticks(pid: int) -> int:
    total, todo, seen = 0, [pid], set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo.extend(int(x) for x in f.read().split())
        except (OSError, ValueError, IndexError):
            pass
    return total


def sys_cpu() -> tuple[int, int]:
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (v + [0] * 8)[:8]
    return user + nice + system + irq + softirq, steal


class Stats:
    def __init__(self) -> None:
        self.lat: list[float] = []  # from the due time
        self.service: list[float] = []  # from the actual send
        self.late: list[float] = []  # send - due
        self.hdr: dict[str, list[float]] = {k: [] for k in HEADERS}
        self.errors: dict[str, int] = {}
        self.ok = 0

    def err(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


async def one(session, url: str, body: bytes, hdrs: dict[str, str], due: float, st: Stats, record: bool) -> None:
    sent = time.perf_counter()
    try:
        async with session.post(url, data=body, headers=hdrs) as resp:
            content = await resp.read()
            status = resp.status
            values = {k: resp.headers.get(h) for k, h in HEADERS.items()}
    except Exception as exc:  # noqa: BLE001 - every failure counts
        if record:
            st.err(type(exc).__name__)
        return
    end = time.perf_counter()
    if not record:
        return
    if status != 200 or b'"choices"' not in content:
        st.err(f"status{status}" if status != 200 else "bad_body")
        return
    st.ok += 1
    st.lat.append((end - due) * 1000.0)
    st.service.append((end - sent) * 1000.0)
    st.late.append((sent - due) * 1000.0)
    for k, v in values.items():
        if v is not None:
            try:
                st.hdr[k].append(float(v))
            except ValueError:
                pass


async def run(a: argparse.Namespace) -> dict:
    import aiohttp

    body = json.dumps(PAYLOAD).encode()
    hdrs = {"content-type": "application/json", "authorization": "Bearer " + a.api_key}
    pids = {}
    for item in filter(None, (a.pids or "").split(",")):
        name, pid = item.split("=")
        pids[name] = int(pid)
    st = Stats()
    conn = aiohttp.TCPConnector(limit=a.max_inflight, limit_per_host=a.max_inflight)
    rng = random.Random(a.seed)
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=a.timeout),
                                     trust_env=False, auto_decompress=False) as session:
        tasks: set[asyncio.Task] = set()
        t0 = time.perf_counter() + 0.05
        t_warm_end = t0 + a.warmup
        t_end = t_warm_end + a.duration
        due = t0
        cpu0 = sys0 = self0 = None
        w0 = w1 = 0.0
        scheduled = 0
        while due < t_end:
            now = time.perf_counter()
            if cpu0 is None and now >= t_warm_end:
                cpu0 = {n: proc_cpu_ticks(p) for n, p in pids.items()}
                sys0, self0, w0 = sys_cpu(), resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
            if due > now:
                await asyncio.sleep(due - now)
            record = due >= t_warm_end
            if record:
                scheduled += 1
            if len(tasks) >= a.max_inflight:
                if record:
                    st.err("dropped")
            else:
                task = asyncio.create_task(one(session, a.url, body, hdrs, due, st, record))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            due += rng.expovariate(a.rate) if a.poisson else 1.0 / a.rate
        await asyncio.sleep(max(0.0, t_end - time.perf_counter()))
        w1 = time.perf_counter()
        cpu1 = {n: proc_cpu_ticks(p) for n, p in pids.items()}
        sys1, self1 = sys_cpu(), resource.getrusage(resource.RUSAGE_SELF)
        if tasks:
            await asyncio.wait(tasks, timeout=a.timeout + 5)
    win = max(w1 - w0, 1e-9)
    cpu = {n: round(100.0 * (cpu1[n] - cpu0[n]) / CLK / win, 1) for n in pids} if cpu0 is not None else {}
    if self0 is not None:
        cpu["loadgen"] = round(100.0 * ((self1.ru_utime + self1.ru_stime) - (self0.ru_utime + self0.ru_stime)) / win, 1)
        cpu["machine_busy"] = round(100.0 * (sys1[0] - sys0[0]) / CLK / win, 1)
        cpu["steal"] = round(100.0 * (sys1[1] - sys0[1]) / CLK / win, 1)
        cpu["other"] = round(cpu["machine_busy"] - sum(v for k, v in cpu.items()
                                                       if k not in ("machine_busy", "steal")), 1)
    res = {
        "kind": "open_loop", "label": a.label, "tag": a.tag, "url": a.url, "rate": a.rate,
        "poisson": a.poisson, "duration_s": a.duration, "warmup_s": a.warmup, "scheduled": scheduled,
        "ok": st.ok, "errors": sum(st.errors.values()), "error_kinds": st.errors,
        "achieved_rps": st.ok / a.duration,
        "latency_ms": summary(st.lat), "service_ms": summary(st.service), "late_ms": summary(st.late),
        "overhead_hdr_ms": summary(st.hdr["ours"]) if st.hdr["ours"] else None,
        "litellm_overhead_hdr_ms": summary(st.hdr["litellm"]) if st.hdr["litellm"] else None,
        "cpu_pct": cpu, "nproc": os.cpu_count(), "loadavg_end": os.getloadavg(),
        "ts": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    L = res["latency_ms"]
    f = lambda s, k: f"{s[k]:.2f}" if s and s.get("n") else "-"  # noqa: E731
    line = (f"[{a.label:>12} open {a.rate:g}/s] achieved={res['achieved_rps']:.1f}/s ok={st.ok} "
            f"err={res['errors']} lat p50/p95/p99/max={f(L,'p50')}/{f(L,'p95')}/{f(L,'p99')}/{f(L,'max')} ms "
            f"late p99={f(res['late_ms'],'p99')}")
    for key, name in (("overhead_hdr_ms", "x-gateway-overhead"), ("litellm_overhead_hdr_ms", "litellm-hdr")):
        if res[key]:
            ov = res[key]
            line += f" {name} p50/p95/p99={f(ov,'p50')}/{f(ov,'p95')}/{f(ov,'p99')}"
    line += f" cpu%={cpu}"
    if st.errors:
        line += f" error_kinds={st.errors}"
    print(line, flush=True)
    if a.json_out:
        with open(a.json_out, "a") as fh:
            fh.write(json.dumps(res) + "\n")
    return res


# --- reading results -------------------------------------------------------------------------------


def load(path: str) -> list[dict]:
    return [json.loads(x) for x in open(path) if x.strip() and '"open_loop"' in x]


def baseline(rows: list[dict], row: dict) -> dict | None:
    """The latest `direct` run of the same tag and rate before this row; failing that, of the same
    tag at any rate (the ceiling search measures the direct call once, at its highest rate)."""
    same_rate = same_tag = None
    for r in rows:
        if r is row:
            break
        if r["label"] == "direct" and r["tag"] == row["tag"]:
            same_tag = r
            if r["rate"] == row["rate"]:
                same_rate = r
    return same_rate or same_tag


def g(d: dict | None, k: str) -> float | None:
    return d.get(k) if d and d.get("n") else None


def fmt(x: float | None, nd: int = 1) -> str:
    return "-" if x is None else f"{x:.{nd}f}"


def report(path: str) -> None:
    rows = load(path)
    print("| tag | target | offered/s | achieved/s | err | p50 | p95 | p99 | max | Δp50 | Δp95 "
          "| x-gateway-overhead-ms p50/p95/p99 | LiteLLM hdr p50/p95/p99 | CPU% (100=1 core) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        L = r["latency_ms"]
        b = baseline(rows, r)
        bL = b["latency_ms"] if b else None

        def d(k: str, L: dict | None = L, bL: dict | None = bL) -> float | None:
            a, b0 = g(L, k), g(bL, k)
            return None if a is None or b0 is None else a - b0

        def trio(s: dict | None) -> str:
            return "/".join(fmt(g(s, k), 2) for k in ("p50", "p95", "p99")) if s else "-"

        c = r["cpu_pct"]
        cpu = " ".join(f"{k}:{v:.0f}" for k, v in c.items()
                       if k not in ("loadgen", "machine_busy", "steal", "other") and v >= 1)
        cpu += f" lg:{c.get('loadgen', 0):.0f} oth:{c.get('other', 0):.0f}"
        err = str(r["errors"]) + (f" {r['error_kinds']}" if r["errors"] else "")
        print(f"| {r['tag']} | {r['label']} | {r['rate']:g} | {r['achieved_rps']:.1f} | {err} | {fmt(g(L,'p50'))} "
              f"| {fmt(g(L,'p95'))} | {fmt(g(L,'p99'))} | {fmt(g(L,'max'))} | {fmt(d('p50'))} | {fmt(d('p95'))} "
              f"| {trio(r['overhead_hdr_ms'])} | {trio(r['litellm_overhead_hdr_ms'])} | {cpu} |")


def passes(path: str, label: str, rate: float, tag: str, max_p95_overhead: float) -> bool:
    rows = load(path)
    mine = [r for r in rows if r["label"] == label and r["rate"] == rate and r["tag"] == tag]
    if not mine:
        print(f"no run of {label} at {rate}/s ({tag})")
        return False
    r = mine[-1]
    b = baseline(rows, r)
    base_p95 = g(b["latency_ms"], "p95") if b else 0.0
    p95 = g(r["latency_ms"], "p95")
    over = None if p95 is None else p95 - (base_p95 or 0.0)
    ok = r["errors"] == 0 and r["achieved_rps"] >= 0.98 * rate and over is not None and over < max_p95_overhead
    print(f"step {label} {rate:g}/s: errors={r['errors']} achieved={r['achieved_rps']:.1f}/s "
          f"p95 overhead={fmt(over)} ms -> {'PASS' if ok else 'FAIL'}")
    return ok


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url")
    ap.add_argument("--rate", type=float, default=50.0, help="requests per second offered")
    ap.add_argument("--duration", "-d", type=float, default=60.0, help="measured seconds")
    ap.add_argument("--warmup", "-w", type=float, default=5.0)
    ap.add_argument("--poisson", action="store_true", help="exponential gaps instead of even spacing")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--max-inflight", type=int, default=1000)
    ap.add_argument("--timeout", type=float, default=30.0)
    ap.add_argument("--label", default="target")
    ap.add_argument("--tag", default="")
    ap.add_argument("--pids", default="")
    ap.add_argument("--json-out", default="")
    ap.add_argument("--api-key", default=os.environ.get("BENCH_API_KEY", "sk-dummy"))
    ap.add_argument("--report", metavar="JSONL", help="print markdown tables of a results file and exit")
    ap.add_argument("--passes", metavar="JSONL", help="exit 0 if --label at --rate (--tag) passed")
    ap.add_argument("--max-p95-overhead", type=float, default=100.0)
    a = ap.parse_args()
    if a.report:
        report(a.report)
        return
    if a.passes:
        sys.exit(0 if passes(a.passes, a.label, a.rate, a.tag, a.max_p95_overhead) else 1)
    if not a.url:
        ap.error("--url is required")
    if not (0 < a.rate <= 5000 and 0 < a.duration <= 600 and 0 <= a.warmup <= 120):
        sys.exit("rate must be in (0, 5000], duration in (0, 600] s, warmup in [0, 120] s")
    try:
        import uvloop
    except ImportError:
        uvloop = None
    if uvloop is not None:
        uvloop.run(run(a))
    else:
        asyncio.run(run(a))


if __name__ == "__main__":
    main()
