"""A run's events reach readers in the process that generates it from memory, and everyone else
from Redis: the same events, ids and order either way (chat/runs.py)."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest

from chat import runs
from config.errors import ApiError
from config.redis import get_async_redis


async def _close_redis() -> None:
    # The client belongs to this test's event loop, which asyncio.run is about to close.
    await get_async_redis().aclose()  # type: ignore[attr-defined]  # stubs predate aclose


async def _collect(tenant: str, run_id: str, after: str = "0-0") -> list[runs.RunEvent]:
    return [event async for event in runs.read_run(tenant, run_id, after, block_ms=200)]


async def _emit_run(tenant: str, run_id: str, deltas: int) -> None:
    await runs._emit(tenant, run_id, "start", {"run_id": run_id})
    for i in range(deltas):
        await runs._emit(tenant, run_id, "delta", {"content": f"t{i} "})
    await runs._emit(tenant, run_id, "done", {"usage": {"completion_tokens": deltas}})


def test_local_readers_get_what_redis_holds_and_resume_mid_run() -> None:
    tenant, run_id = "acme", uuid.uuid4().hex
    key = runs._events_key(tenant, run_id)

    async def scenario() -> tuple[list[Any], list[Any], list[Any], list[Any]]:
        runs._local_runs[key] = runs._LocalRun()
        reader = asyncio.create_task(_collect(tenant, run_id))  # waits for events as they come
        await asyncio.sleep(0)
        await _emit_run(tenant, run_id, 5)
        live = await reader
        resumed = await _collect(tenant, run_id, live[2].id.split(":")[1])
        stored = await get_async_redis().xrange(key)
        await _close_redis()
        # A reader with no local copy (another process) reads the stream in Redis.
        del runs._local_runs[key]
        remote = await _collect(tenant, run_id)
        await _close_redis()
        return live, resumed, stored, remote

    live, resumed, stored, remote = asyncio.run(scenario())
    assert [e.type for e in live] == ["start"] + ["delta"] * 5 + ["done"]
    assert [e.id for e in live] == [f"{run_id}:{sid.decode()}" for sid, _ in stored]
    assert "".join(e.data.get("content", "") for e in live) == "t0 t1 t2 t3 t4 "
    assert [e.id for e in resumed] == [e.id for e in live[3:]]
    assert [(e.id, e.type, e.data) for e in remote] == [(e.id, e.type, e.data) for e in live]


def test_a_reader_on_another_event_loop_uses_redis() -> None:
    tenant, run_id = "acme", uuid.uuid4().hex
    key = runs._events_key(tenant, run_id)

    async def generate() -> None:
        runs._local_runs[key] = runs._LocalRun()
        await _emit_run(tenant, run_id, 2)
        await _close_redis()

    async def read() -> list[runs.RunEvent]:
        try:
            return await _collect(tenant, run_id)
        finally:
            await _close_redis()

    asyncio.run(generate())
    assert key in runs._local_runs  # its loop is gone: this copy must not be read from
    events = asyncio.run(read())
    assert [e.type for e in events] == ["start", "delta", "delta", "done"]
    runs._local_runs.pop(key, None)


def test_the_local_copy_is_bounded_and_reads_by_position(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runs, "RUN_EVENTS_MAXLEN", 4)
    tenant, run_id = "acme", uuid.uuid4().hex
    key = runs._events_key(tenant, run_id)

    async def scenario() -> tuple[runs._LocalRun, list[runs.RunEvent]]:
        local = runs._LocalRun()
        runs._local_runs[key] = local
        await _emit_run(tenant, run_id, 6)
        tail = await _collect(tenant, run_id, local.events[1][1].id.split(":")[1])
        await _close_redis()
        return local, tail

    local, tail = asyncio.run(scenario())
    assert len(local.events) == 4 and local.finished
    assert [e.data.get("content") for e in tail] == ["t5 ", None]
    assert tail[-1].type == "done"
    runs._local_runs.pop(key, None)


def test_a_malformed_event_id_is_a_400() -> None:
    with pytest.raises(ApiError) as refused:
        runs._stream_position("12-abc")
    assert refused.value.status_code == 400 and refused.value.code == "invalid_event_id"


def test_text_deltas_are_coalesced_without_holding_text_back(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runs, "RUN_DELTA_FLUSH_MS", 100)
    tenant, run_id = "acme", uuid.uuid4().hex
    key = runs._events_key(tenant, run_id)

    async def contents() -> list[str]:
        entries = await get_async_redis().xrange(key)
        return [json.loads(fields[b"d"])["content"] for _id, fields in entries]

    async def scenario() -> list[list[str]]:
        buffer = runs._DeltaBuffer(tenant, run_id)
        seen = []
        await buffer.add("Hel")  # the first goes at once: time to first token
        seen.append(await contents())
        await buffer.add("lo")
        await buffer.add(", wor")
        seen.append(await contents())  # held: less than the interval since the last write
        await asyncio.sleep(0.25)  # the model pauses: the held text still goes out
        seen.append(await contents())
        await buffer.add("ld")
        await buffer.flush()  # the run ends: nothing is left behind
        await buffer.flush()
        seen.append(await contents())
        await _close_redis()
        return seen

    first, held, after_pause, final = asyncio.run(scenario())
    assert first == ["Hel"]
    assert held == ["Hel"]
    assert after_pause == ["Hel", "lo, wor"]
    assert final == ["Hel", "lo, wor", "ld"]
