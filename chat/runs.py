"""A generation run: an answer produced in the background, its events buffered in Redis.

The REST (SSE) and WebSocket entries start a run and read its events; they never hold the
answer themselves. So an answer is completed and stored even when its client goes away, a
client that reconnects (to any process) resumes from its last event id, and a slow client
never makes a server buffer without bound: the events wait in a capped Redis stream for a
bounded time (`RUN_EVENTS_TTL_SECONDS`) and each reader pulls at its own pace.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from chat.api import tool_calls_out
from chat.gateway import Caller, GatewayCall, open_answer_stream
from config.env import envint
from config.errors import ApiError
from config.redis import get_async_redis, rkey

logger = logging.getLogger(__name__)

RUN_EVENTS_TTL_SECONDS = envint("RUN_EVENTS_TTL_SECONDS", 600)
RUN_EVENTS_MAXLEN = envint("RUN_EVENTS_MAXLEN", 20_000)
STOP_POLL_SECONDS = 0.2
TERMINAL = {"done", "error"}

# Runs in flight in this process; holding them keeps their tasks from being garbage collected.
_tasks: set[asyncio.Task[None]] = set()


@dataclass(frozen=True)
class RunEvent:
    id: str  # "<run_id>:<redis stream id>", usable as an SSE id or a WebSocket resume point
    type: str  # start | delta | done | error
    data: dict[str, Any]


def _events_key(tenant: str, run_id: str) -> str:
    return rkey("run", tenant, run_id, "events")


def _stop_key(tenant: str, run_id: str) -> str:
    return rkey("run", tenant, run_id, "stop")


def _owner_key(tenant: str, run_id: str) -> str:
    return rkey("run", tenant, run_id, "owner")


def _latest_key(tenant: str, conversation_id: uuid.UUID) -> str:
    return rkey("run", tenant, "conversation", str(conversation_id))


async def _emit(tenant: str, run_id: str, type_: str, data: dict[str, Any]) -> None:
    redis = get_async_redis()
    key = _events_key(tenant, run_id)
    payload = json.dumps(data, separators=(",", ":"), default=str)
    pipe = redis.pipeline(transaction=False)
    pipe.xadd(key, {"t": type_, "d": payload}, maxlen=RUN_EVENTS_MAXLEN, approximate=True)
    pipe.expire(key, RUN_EVENTS_TTL_SECONDS)
    await pipe.execute()


async def start_run(caller: Caller, call: GatewayCall) -> str:
    """Starts generating in the background; returns the run id to read events from."""
    run_id = uuid.uuid4().hex
    tenant = caller.tenant.slug
    redis = get_async_redis()
    owner = f"{caller.user_id}:{call.conversation_id or ''}"
    await redis.set(_owner_key(tenant, run_id), owner, ex=RUN_EVENTS_TTL_SECONDS)
    if call.conversation_id is not None:
        await redis.set(_latest_key(tenant, call.conversation_id), run_id, ex=RUN_EVENTS_TTL_SECONDS)
    # The first event exists at once, so a reader never waits on a stream that is not there.
    await _emit(tenant, run_id, "start", {"run_id": run_id, "request_id": caller.request_id})
    # A fresh context: the run outlives the request, so it must not borrow the request's
    # per-request database thread (Django closes it when the response is done).
    task = asyncio.create_task(_generate(run_id, caller, call), context=contextvars.Context())
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)
    return run_id


async def request_stop(tenant: str, run_id: str) -> None:
    await get_async_redis().set(_stop_key(tenant, run_id), "1", ex=RUN_EVENTS_TTL_SECONDS)


async def run_belongs_to(tenant: str, run_id: str, user_id: int, conversation_id: uuid.UUID | None) -> bool:
    """Only the user (and conversation) that started a run may read or stop it."""
    owner = await get_async_redis().get(_owner_key(tenant, run_id))
    return owner is not None and owner.decode() == f"{user_id}:{conversation_id or ''}"


async def latest_run(tenant: str, conversation_id: uuid.UUID) -> str | None:
    value = await get_async_redis().get(_latest_key(tenant, conversation_id))
    return value.decode() if value else None


async def _generate(run_id: str, caller: Caller, call: GatewayCall) -> None:
    tenant = caller.tenant.slug
    try:
        stream = await open_answer_stream(caller, call)
    except ApiError as exc:
        await _emit(tenant, run_id, "error", exc.body() | {"status": exc.status_code})
        return
    except Exception:
        logger.exception("run %s failed before its first token", run_id)
        await _emit(
            tenant,
            run_id,
            "error",
            {"error": {"type": "api_error", "message": "Internal error", "code": "internal_error"}},
        )
        return
    redis = get_async_redis()
    next_stop_check = time.monotonic() + STOP_POLL_SECONDS
    try:
        async for event in stream.events():
            if event.kind == "text" and event.choice == 0:
                await _emit(tenant, run_id, "delta", {"content": event.text})
            elif event.kind == "tool_call" and event.choice == 0:
                await _emit(
                    tenant,
                    run_id,
                    "delta",
                    {
                        "tool_call": {
                            "index": event.tool_index,
                            "id": event.tool_call_id,
                            "name": event.tool_name,
                            "arguments": event.arguments,
                        }
                    },
                )
            if time.monotonic() >= next_stop_check:
                next_stop_check = time.monotonic() + STOP_POLL_SECONDS
                if await redis.exists(_stop_key(tenant, run_id)):
                    stream.stop()
    finally:
        settlement = await stream.finish()
    if stream.error is not None:
        await _emit(
            tenant,
            run_id,
            "error",
            {
                "error": {
                    "type": "upstream_error",
                    "message": f"The model stopped answering: {stream.error.message}",
                    "code": stream.error.code,
                },
                "partial": True,
                "message_id": settlement.message_id,
                "usage": {
                    "prompt_tokens": settlement.prompt_tokens,
                    "completion_tokens": settlement.completion_tokens,
                },
                "cost": str(settlement.cost),
            },
        )
        return
    await _emit(
        tenant,
        run_id,
        "done",
        {
            "message_id": settlement.message_id,
            "model": settlement.model,
            "provider": settlement.provider,
            "cache": settlement.cache_status,
            "finish_reason": settlement.finish_reason,
            # An answer that calls tools waits for their results (role "tool" messages).
            "tool_calls": tool_calls_out(settlement.extra.get("tool_calls", [])),
            "stopped": settlement.finish_reason == "stopped",
            "usage": {
                "prompt_tokens": settlement.prompt_tokens,
                "completion_tokens": settlement.completion_tokens,
                "total_tokens": settlement.prompt_tokens + settlement.completion_tokens,
                "estimated": settlement.usage_estimated,
            },
            "cost": str(settlement.cost),
        },
    )


def parse_event_id(event_id: str) -> tuple[str, str]:
    """'<run>:<stream id>' -> (run, stream id); a bare run id resumes from its start."""
    run_id, _, stream_id = event_id.partition(":")
    if not run_id or any(c not in "0123456789abcdef" for c in run_id):
        raise ApiError(400, "Not a valid event id", "invalid_event_id", param="last_event_id")
    return run_id, stream_id or "0-0"


async def read_run(
    tenant: str, run_id: str, after: str = "0-0", block_ms: int = 15_000
) -> AsyncIterator[RunEvent]:
    """Events of a run after `after`, waiting for new ones, until its done or error event."""
    redis = get_async_redis()
    key = _events_key(tenant, run_id)
    cursor = after
    idle_rounds = 0
    while True:
        batches = await redis.xread({key: cursor}, count=200, block=block_ms)
        if not batches:
            idle_rounds += 1
            if idle_rounds * block_ms >= RUN_EVENTS_TTL_SECONDS * 1000 or not await redis.exists(key):
                if not await redis.exists(key):
                    raise ApiError(
                        404,
                        "This answer's events are gone (finished too long ago or never existed)",
                        "run_not_found",
                    )
                return
            continue
        idle_rounds = 0
        for _key, entries in batches:
            for stream_id, fields in entries:
                cursor = stream_id.decode()
                type_ = fields[b"t"].decode()
                yield RunEvent(f"{run_id}:{cursor}", type_, json.loads(fields[b"d"]))
                if type_ in TERMINAL:
                    return
