"""Many concurrent WebSocket chats, each streaming a whole answer: completion, added time to first
token, and the server's memory per connection.

    .venv/bin/python benchmarks/ws_load.py --base http://127.0.0.1:8000 --connections 1000 \
        --server-pid PID --upstream-ttft-ms 300 --expect-tokens 100 \
        [--direct-url http://127.0.0.1:9100/v1/chat/completions] [--stagger 0] [--json-out f.jsonl]

Steps (every one bounded in count and time):
  1. create --connections conversations with POST /api/v1/conversations (the API key in
     $BENCH_API_KEY, which names the tenant), --create-concurrency at a time;
  2. the server's RSS (VmRSS of --server-pid and its children) before any socket;
  3. open every socket, /ws/{conversation_id}?token=<key>, --open-concurrency at a time, and
     keep them all open; the RSS again once they are idle: memory per idle connection;
  4. each socket sends {"type": "message", "content": ...}: all at once (--stagger 0), or
     evenly over --stagger seconds; each waits for start, the first delta (time to first token,
     from its send), every delta, and done or error; the RSS is sampled meanwhile (peak);
  5. with --direct-url, the same number of streamed requests sent straight to the upstream at
     the same moments (SSE, time to first content chunk): the reference TTFT under the same
     concurrency; "added TTFT" is ours minus that (and, as a second view, ours minus the
     upstream's configured --upstream-ttft-ms).
Prints one summary line and appends a JSON line with everything to --json-out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time

import aiohttp

CLK = os.sysconf("SC_CLK_TCK")


def pct(s: list[float], p: float) -> float:
    if not s:
        return float("nan")
    k = (len(s) - 1) * p / 100.0
    f = int(k)
    c = min(f + 1, len(s) - 1)
    return s[f] + (s[c] - s[f]) * (k - f)


def summary(vals: list[float]) -> dict[str, float]:
    s = sorted(vals)
    if not s:
        return {"n": 0}
    return {"n": len(s), "p50": pct(s, 50), "p95": pct(s, 95), "p99": pct(s, 99), "min": s[0], "max": s[-1]}


def tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo.extend(int(x) for x in f.read().split())
        except OSError:
            pass
    return out


def rss_mb(pid: int) -> float:
    total = 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024.0


def cpu_ticks(pid: int) -> int:
    total = 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, ValueError, IndexError):
            pass
    return total


def machine_busy_ticks() -> int:
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    return v[0] + v[1] + v[2] + v[5] + v[6]


async def create_conversations(session: aiohttp.ClientSession, base: str, key: str, n: int, conc: int) -> list[str]:
    sem = asyncio.Semaphore(conc)
    hdrs = {"authorization": "Bearer " + key, "content-type": "application/json"}

    async def one(i: int) -> str:
        async with sem:
            async with session.post(f"{base}/api/v1/conversations", json={"title": f"ws bench {i}"},
                                    headers=hdrs) as r:
                body = await r.json(content_type=None)
                if r.status not in (200, 201):
                    raise RuntimeError(f"creating a conversation: {r.status} {body}")
                return str(body["id"])

    return list(await asyncio.gather(*(one(i) for i in range(n))))


class Conn:
    def __init__(self, i: int) -> None:
        self.i = i
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.open_error: str | None = None
        self.sent = 0.0
        self.start = None
        self.first = None
        self.end = None
        self.deltas = 0
        self.outcome = "pending"
        self.completion_tokens = None


async def open_ws(session: aiohttp.ClientSession, url: str, c: Conn, sem: asyncio.Semaphore, timeout: float) -> None:
    async with sem:
        try:
            c.ws = await asyncio.wait_for(session.ws_connect(url, heartbeat=None, max_msg_size=0), timeout)
        except Exception as exc:  # noqa: BLE001
            c.open_error = type(exc).__name__ + (f" {exc.status}" if hasattr(exc, "status") else "")


async def chat(c: Conn, delay: float, content: str, timeout: float) -> None:
    """Reads the socket from the start (so the server's pings are answered while this socket
    waits for its turn), sends the message after `delay`, and records its events."""
    assert c.ws is not None
    ws = c.ws

    async def reader() -> None:
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                c.outcome = f"ws_{msg.type.name.lower()}"
                return
            ev = json.loads(msg.data)
            kind = ev.get("type")
            now = time.perf_counter()
            if kind == "start":
                c.start = now
            elif kind == "delta":
                if c.first is None:
                    c.first = now
                c.deltas += 1
            elif kind == "done":
                c.end = now
                c.outcome = "done"
                c.completion_tokens = (ev.get("usage") or {}).get("completion_tokens")
                return
            elif kind == "error":
                c.end = now
                c.outcome = "error:" + str((ev.get("error") or {}).get("code"))
                return
        c.outcome = "closed"

    task = asyncio.create_task(reader())
    try:
        await asyncio.sleep(delay)
        if task.done():  # the server closed the socket before its turn
            c.outcome = "closed_before_send" if c.outcome == "closed" else c.outcome
            return
        c.sent = time.perf_counter()
        await ws.send_str(json.dumps({"type": "message", "content": content}))
        await asyncio.wait_for(asyncio.shield(task), timeout)
    except TimeoutError:
        c.outcome = "timeout"
    except Exception as exc:  # noqa: BLE001
        c.outcome = type(exc).__name__
    finally:
        if not task.done():
            task.cancel()
            try:
                await task
            except BaseException:  # noqa: BLE001
                pass
        elif c.outcome == "pending" and task.exception() is not None:
            c.outcome = type(task.exception()).__name__


async def direct_stream(session: aiohttp.ClientSession, url: str, delay: float, tokens: int,
                        timeout: float, out: list) -> None:
    await asyncio.sleep(delay)
    t0 = time.perf_counter()
    first = None
    body = {"model": "gpt-4o-mini", "stream": True, "max_tokens": max(tokens * 2, 64),
            "messages": [{"role": "user", "content": "Tell me a story."}]}
    try:
        async with asyncio.timeout(timeout):
            async with session.post(url, json=body, headers={"authorization": "Bearer bench"}) as r:
                async for line in r.content:
                    if first is None and line.startswith(b"data: {") and b'"content"' in line:
                        first = time.perf_counter()
        out.append(("ok", (first or time.perf_counter()) - t0, time.perf_counter() - t0))
    except Exception as exc:  # noqa: BLE001
        out.append((type(exc).__name__, None, None))


async def sample_rss(pid: int, stop: asyncio.Event, peak: list[float]) -> None:
    while not stop.is_set():
        peak[0] = max(peak[0], rss_mb(pid))
        try:
            await asyncio.wait_for(stop.wait(), 0.5)
        except TimeoutError:
            pass


async def main_async(a: argparse.Namespace) -> dict:
    key = a.api_key
    base = a.base.rstrip("/")
    ws_base = "ws" + base[4:] if base.startswith("http") else base
    n = a.connections
    conn = aiohttp.TCPConnector(limit=0, force_close=False)
    res: dict = {"kind": "ws_load", "label": a.label, "connections": n, "stagger_s": a.stagger,
                 "upstream_ttft_ms": a.upstream_ttft_ms, "expect_tokens": a.expect_tokens,
                 "ts": time.strftime("%Y-%m-%dT%H:%M:%S"), "nproc": os.cpu_count()}
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=None),
                                     trust_env=False) as session:
        t = time.perf_counter()
        ids = await asyncio.wait_for(create_conversations(session, base, key, n, a.create_concurrency), 600)
        res["create_s"] = round(time.perf_counter() - t, 2)

        # Reference first: the upstream alone at the same concurrency and send pattern.
        if a.direct_url:
            out: list = []
            delays = [a.stagger * i / n for i in range(n)]
            t = time.perf_counter()
            await asyncio.gather(*(direct_stream(session, a.direct_url, d, a.expect_tokens, a.timeout, out)
                                   for d in delays))
            ok = [x for x in out if x[0] == "ok"]
            res["direct"] = {"ok": len(ok), "errors": len(out) - len(ok),
                             "ttft_ms": summary([x[1] * 1000 for x in ok]),
                             "total_ms": summary([x[2] * 1000 for x in ok]),
                             "wall_s": round(time.perf_counter() - t, 2)}
            await asyncio.sleep(2)

        rss0 = rss_mb(a.server_pid)
        conns = [Conn(i) for i in range(n)]
        sem = asyncio.Semaphore(a.open_concurrency)
        t = time.perf_counter()
        await asyncio.gather(*(open_ws(session, f"{ws_base}/ws/{ids[c.i]}?token={key}", c, sem, a.timeout)
                               for c in conns))
        res["open_s"] = round(time.perf_counter() - t, 2)
        opened = [c for c in conns if c.ws is not None and not c.ws.closed]
        res["opened"] = len(opened)
        res["open_errors"] = {}
        for c in conns:
            if c.open_error:
                res["open_errors"][c.open_error] = res["open_errors"].get(c.open_error, 0) + 1
        await asyncio.sleep(3)
        rss1 = rss_mb(a.server_pid)

        stop = asyncio.Event()
        peak = [rss1]
        sampler = asyncio.create_task(sample_rss(a.server_pid, stop, peak))
        cpu0 = {"server": cpu_ticks(a.server_pid)}
        if a.upstream_pid:
            cpu0["upstream"] = cpu_ticks(a.upstream_pid)
        busy0, w0 = machine_busy_ticks(), time.perf_counter()
        content = "Tell me a story about a lighthouse keeper."
        await asyncio.gather(*(chat(c, a.stagger * k / max(len(opened), 1), content, a.timeout)
                               for k, c in enumerate(opened)))
        w1 = time.perf_counter()
        win = w1 - w0
        cpu1 = {"server": cpu_ticks(a.server_pid)}
        if a.upstream_pid:
            cpu1["upstream"] = cpu_ticks(a.upstream_pid)
        busy1 = machine_busy_ticks()
        stop.set()
        await sampler
        rss2 = rss_mb(a.server_pid)
        for c in opened:
            await c.ws.close()
        await asyncio.sleep(1)

    done = [c for c in opened if c.outcome == "done"]
    ttft = [(c.first - c.sent) * 1000 for c in done if c.first]
    total = [(c.end - c.sent) * 1000 for c in done]
    outcomes: dict[str, int] = {}
    for c in opened:
        outcomes[c.outcome] = outcomes.get(c.outcome, 0) + 1
    short = sum(1 for c in done if c.completion_tokens != a.expect_tokens)
    cpu = {k: round(100.0 * (cpu1[k] - cpu0[k]) / CLK / win, 1) for k in cpu0}
    cpu["machine_busy"] = round(100.0 * (busy1 - busy0) / CLK / win, 1)
    cpu["other_incl_loadgen"] = round(cpu["machine_busy"] - sum(v for k, v in cpu.items() if k in ("server", "upstream")), 1)
    res.update({
        "completed": len(done), "outcomes": outcomes, "wrong_token_count": short,
        "deltas": summary([c.deltas for c in done]),
        "ttft_ms": summary(ttft), "total_ms": summary(total),
        "added_ttft_vs_knob_ms": summary([x - a.upstream_ttft_ms for x in ttft]),
        "stream_wall_s": round(win, 2),
        "rss_mb": {"before": round(rss0, 1), "idle_open": round(rss1, 1), "peak_streaming": round(peak[0], 1),
                   "after": round(rss2, 1)},
        "kb_per_conn_idle": round((rss1 - rss0) * 1024 / max(len(opened), 1), 1),
        "kb_per_conn_peak": round((peak[0] - rss0) * 1024 / max(len(opened), 1), 1),
        "cpu_pct": cpu,
    })
    if "direct" in res and res["direct"]["ttft_ms"].get("n") and ttft:
        d = res["direct"]["ttft_ms"]
        T = res["ttft_ms"]
        res["added_ttft_vs_direct_ms"] = {k: T[k] - d[k] for k in ("p50", "p95", "p99")}
    f = lambda s, k: f"{s[k]:.0f}" if s.get("n") else "-"  # noqa: E731
    T, A = res["ttft_ms"], res["added_ttft_vs_knob_ms"]
    line = (f"[{a.label} ws N={n} stagger={a.stagger:g}s] opened={len(opened)} completed={len(done)} "
            f"outcomes={outcomes} ttft p50/p95/p99/max={f(T,'p50')}/{f(T,'p95')}/{f(T,'p99')}/{f(T,'max')} ms "
            f"added(vs knob) p50/p95={f(A,'p50')}/{f(A,'p95')} ms "
            f"total p50/p95={f(res['total_ms'],'p50')}/{f(res['total_ms'],'p95')} ms wall={win:.1f}s "
            f"rss MB={res['rss_mb']} per-conn KB idle={res['kb_per_conn_idle']} peak={res['kb_per_conn_peak']} "
            f"cpu%={cpu}")
    if "direct" in res:
        D = res["direct"]
        line += (f" | direct: ok={D['ok']} err={D['errors']} ttft p50/p95={f(D['ttft_ms'],'p50')}/"
                 f"{f(D['ttft_ms'],'p95')} ms total p50/p95={f(D['total_ms'],'p50')}/{f(D['total_ms'],'p95')} ms")
        if "added_ttft_vs_direct_ms" in res:
            X = res["added_ttft_vs_direct_ms"]
            line += f" | added ttft vs direct p50/p95/p99={X['p50']:.0f}/{X['p95']:.0f}/{X['p99']:.0f} ms"
    print(line, flush=True)
    if a.json_out:
        with open(a.json_out, "a") as fh:
            fh.write(json.dumps(res) + "\n")
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True, help="the gateway, http://127.0.0.1:PORT")
    ap.add_argument("--label", default="ours")
    ap.add_argument("--connections", "-n", type=int, default=1000)
    ap.add_argument("--server-pid", type=int, required=True)
    ap.add_argument("--upstream-pid", type=int, default=0)
    ap.add_argument("--upstream-ttft-ms", type=float, default=0.0)
    ap.add_argument("--expect-tokens", type=int, default=100)
    ap.add_argument("--stagger", type=float, default=0.0, help="spread the sends over this many seconds")
    ap.add_argument("--direct-url", default="")
    ap.add_argument("--create-concurrency", type=int, default=10)
    ap.add_argument("--open-concurrency", type=int, default=50)
    ap.add_argument("--timeout", type=float, default=300.0, help="per connection and per answer, seconds")
    ap.add_argument("--api-key", default=os.environ.get("BENCH_API_KEY", ""))
    ap.add_argument("--json-out", default="")
    a = ap.parse_args()
    if not a.api_key:
        sys.exit("set BENCH_API_KEY (or --api-key)")
    if not (1 <= a.connections <= 5000 and 0 <= a.stagger <= 600 and 0 < a.timeout <= 900):
        sys.exit("connections in [1, 5000], stagger in [0, 600] s, timeout in (0, 900] s")
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, 3 * a.connections + 256))
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    try:
        import uvloop

        uvloop.run(main_async(a))
    except ImportError:
        asyncio.run(main_async(a))


if __name__ == "__main__":
    main()
