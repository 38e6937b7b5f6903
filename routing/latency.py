"""Recent time to first token per model (an EWMA in Redis), for the `latency` strategy."""

from __future__ import annotations

from config.redis import get_async_redis, rkey

ALPHA = 0.2  # weight of the newest sample

_UPDATE = """
local old = redis.call('HGET', KEYS[1], ARGV[1])
local new = tonumber(ARGV[2])
if old then new = tonumber(old) * (1 - tonumber(ARGV[3])) + new * tonumber(ARGV[3]) end
redis.call('HSET', KEYS[1], ARGV[1], new)
return tostring(new)
"""


async def record_ttft(model: str, seconds: float) -> float:
    result = await get_async_redis().eval(_UPDATE, 1, rkey("ttft_ewma"), model, seconds, ALPHA)
    return float(result)


async def ttft_by_model(models: list[str]) -> dict[str, float]:
    if not models:
        return {}
    values = await get_async_redis().hmget(rkey("ttft_ewma"), models)
    return {m: float(v) for m, v in zip(models, values, strict=True) if v is not None}
