"""Per-tenant cap on concurrent upstream calls, shared by every process through Redis.

A sorted set per tenant holds one member per call in flight, scored by when it must be gone.
Entries of a process that died without releasing expire on their own, so a crash can never
leave a tenant locked out.
"""

from __future__ import annotations

import time
import uuid

from config.redis import get_async_redis, rkey

# KEYS[1] = the tenant's set. ARGV: now, cap, member, expires_at. 1 = admitted.
_ACQUIRE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[4], ARGV[3])
redis.call('EXPIRE', KEYS[1], 3600)
return 1
"""


class Bulkhead:
    def __init__(self, tenant: str, cap: int, hold_seconds: float) -> None:
        self.key = rkey("bulkhead", tenant)
        self.cap = cap
        self.hold_seconds = hold_seconds
        self.member = uuid.uuid4().hex

    async def acquire(self) -> bool:
        now = time.time()
        result = await get_async_redis().eval(
            _ACQUIRE, 1, self.key, now, self.cap, self.member, now + self.hold_seconds
        )
        return bool(int(result))

    async def release(self) -> None:
        await get_async_redis().zrem(self.key, self.member)


async def bulkhead_in_flight(tenant: str) -> int:
    redis = get_async_redis()
    key = rkey("bulkhead", tenant)
    await redis.zremrangebyscore(key, "-inf", time.time())
    return int(await redis.zcard(key))
