"""The Redis Lua scripts behind admission. Each runs atomically, so every process and replica sees
one shared state and no two requests can both take the last token or the last of a budget.

Token buckets: a hash {level, ts} per bucket; `level` refills at `rate` per second up to
`capacity` (the per-minute limit), using Redis' own clock so that process clocks do not matter.
A bucket absent from Redis is full (keys expire once they would be full again).

Monthly quotas: a hash per scope (tenant, or API key) and month with used and reserved tokens and
cost (micro-dollars, integers), the field `init` once loaded from the database, and one field
`r:<id>` per reservation in flight; a sorted set beside it scores each reservation by when it
expires, so a reservation of a process that died is dropped instead of blocking the tenant.

Amounts are passed and stored as decimal strings: Lua 5.1 formats large numbers in exponent
notation, which HINCRBY would refuse.
"""

_GIVE_BACK = """
local function give_back(h, amount)
  local sep = string.find(amount, ':')
  local tokens, cost = string.sub(amount, 1, sep - 1), string.sub(amount, sep + 1)
  -- HINCRBY refuses "-0".
  if tokens ~= '0' then redis.call('HINCRBY', h, 'reserved_tokens', '-' .. tokens) end
  if cost ~= '0' then redis.call('HINCRBY', h, 'reserved_cost', '-' .. cost) end
end
"""

# KEYS: [1] admission marker, [2 .. 1+nb] buckets, then per quota scope: hash, sorted set.
# ARGV: [1] nb, [2] nq, [3] admission id, [4] reservation ttl (s), [5] warning fraction, then
#   per bucket: capacity, rate per second, cost;
#   per scope: token limit (-1: none), cost limit in micro-USD (-1: none), tokens, cost (micro-USD).
# Returns {status, a, b, then per bucket: remaining, ms until full, capacity,
#          then per scope: used tokens, reserved tokens, used cost, reserved cost, first warning}.
# status 1 admitted; 0 rate limited (a = ms to wait, b = bucket); -1 request larger than bucket b's
# capacity; -2 scope a needs loading from the database; -3 scope a exhausted (b: 1 tokens, 2 cost;
# then a flag, 1 the first refusal at this limit).
ADMIT = _GIVE_BACK + """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local nb, nq = tonumber(ARGV[1]), tonumber(ARGV[2])
local id, ttl, warn = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local sbase = 5 + 3 * nb

local scopes = {}
for j = 1, nq do
  local h, z = KEYS[1 + nb + 2 * j - 1], KEYS[1 + nb + 2 * j]
  local a = sbase + 4 * (j - 1)
  if redis.call('HEXISTS', h, 'init') == 0 then return {-2, j, 0} end
  local expired = redis.call('ZRANGEBYSCORE', z, '-inf', now)
  for _, rid in ipairs(expired) do
    local amount = redis.call('HGET', h, 'r:' .. rid)
    if amount then
      give_back(h, amount)
      redis.call('HDEL', h, 'r:' .. rid)
    end
  end
  if #expired > 0 then redis.call('ZREMRANGEBYSCORE', z, '-inf', now) end
  local v = redis.call('HMGET', h, 'used_tokens', 'reserved_tokens', 'used_cost', 'reserved_cost')
  local s = {h = h, z = z, tlim = tonumber(ARGV[a + 1]), clim = tonumber(ARGV[a + 2]),
             tok = ARGV[a + 3], cost = ARGV[a + 4],
             ut = tonumber(v[1] or '0'), rt = tonumber(v[2] or '0'),
             uc = tonumber(v[3] or '0'), rc = tonumber(v[4] or '0')}
  s.sig = ARGV[a + 1] .. '/' .. ARGV[a + 2]
  -- Admitted while anything is left: the overshoot is at most this one reservation.
  local which = 0
  if s.tlim >= 0 and s.ut + s.rt >= s.tlim then which = 1
  elseif s.clim >= 0 and s.uc + s.rc >= s.clim then which = 2 end
  if which > 0 then
    local first = 0
    if redis.call('HGET', h, 'exhausted') ~= s.sig then
      redis.call('HSET', h, 'exhausted', s.sig)
      first = 1
    end
    return {-3, j, which, first}
  end
  scopes[j] = s
end

local out = {1, 0, 0}
local buckets = {}
local wait, blocked = 0, 0
for i = 1, nb do
  local a = 5 + 3 * (i - 1)
  local cap, rate, cost = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  local v = redis.call('HMGET', KEYS[1 + i], 'level', 'ts')
  local level, ts = tonumber(v[1]), tonumber(v[2])
  if level == nil then level, ts = cap, now end
  level = math.min(cap, level + math.max(0, now - ts) * rate)
  if cost > cap then return {-1, 0, i} end
  if level < cost then
    local w = (cost - level) / rate
    if w > wait then wait, blocked = w, i end
  end
  buckets[i] = {cap = cap, rate = rate, cost = cost, level = level}
end
if blocked > 0 then out = {0, math.ceil(wait * 1000), blocked} end

for i = 1, nb do
  local b = buckets[i]
  if blocked == 0 then
    b.level = b.level - b.cost
    redis.call('HSET', KEYS[1 + i], 'level', tostring(b.level), 'ts', tostring(now))
    redis.call('PEXPIRE', KEYS[1 + i], math.ceil((b.cap - b.level) / b.rate * 1000) + 1000)
  end
  out[#out + 1] = math.max(0, math.floor(b.level))
  out[#out + 1] = math.ceil((b.cap - b.level) / b.rate * 1000)
  out[#out + 1] = b.cap
end
if blocked > 0 then return out end

for j = 1, nq do
  local s = scopes[j]
  redis.call('HSET', s.h, 'r:' .. id, s.tok .. ':' .. s.cost)
  redis.call('HINCRBY', s.h, 'reserved_tokens', s.tok)
  redis.call('HINCRBY', s.h, 'reserved_cost', s.cost)
  redis.call('ZADD', s.z, now + ttl, id)
  redis.call('EXPIRE', s.z, ttl * 2)
  s.rt = s.rt + tonumber(s.tok)
  s.rc = s.rc + tonumber(s.cost)
  local share = 0
  if s.tlim > 0 then share = math.max(share, (s.ut + s.rt) / s.tlim) end
  if s.clim > 0 then share = math.max(share, (s.uc + s.rc) / s.clim) end
  local first = 0
  if share >= warn and redis.call('HGET', s.h, 'warned') ~= s.sig then
    redis.call('HSET', s.h, 'warned', s.sig)
    first = 1
  end
  out[#out + 1] = string.format('%.0f', s.ut)
  out[#out + 1] = string.format('%.0f', s.rt)
  out[#out + 1] = string.format('%.0f', s.uc)
  out[#out + 1] = string.format('%.0f', s.rc)
  out[#out + 1] = first
end
redis.call('SET', KEYS[1], 'admitted', 'EX', ttl * 2)
return out
"""

# Replaces a reservation with the real use, once: the marker turns 'settled' and a second call
# changes nothing. KEYS: [1] marker, [2 .. 1+nb] token buckets, then per scope: hash, sorted set.
# ARGV: [1] nb, [2] nq, [3] id, [4] ttl, then per bucket: capacity, rate, tokens to give back
# (negative: used more than reserved); per scope: used tokens, used cost (micro-USD).
SETTLE = _GIVE_BACK + """
if redis.call('GET', KEYS[1]) == 'settled' then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local nb, nq, id, ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
redis.call('SET', KEYS[1], 'settled', 'EX', ttl * 2)
for i = 1, nb do
  local a = 4 + 3 * (i - 1)
  local cap, rate, delta = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  local v = redis.call('HMGET', KEYS[1 + i], 'level', 'ts')
  local level, ts = tonumber(v[1]), tonumber(v[2])
  if level == nil then level, ts = cap, now end
  level = math.min(cap, level + math.max(0, now - ts) * rate + delta)
  redis.call('HSET', KEYS[1 + i], 'level', tostring(level), 'ts', tostring(now))
  redis.call('PEXPIRE', KEYS[1 + i], math.ceil((cap - level) / rate * 1000) + 1000)
end
for j = 1, nq do
  local h, z = KEYS[1 + nb + 2 * j - 1], KEYS[1 + nb + 2 * j]
  local a = 4 + 3 * nb + 2 * (j - 1)
  -- Not loaded (Redis restarted): the next admission loads the total from the database,
  -- which already holds this request's usage row.
  if redis.call('HEXISTS', h, 'init') == 1 then
    local amount = redis.call('HGET', h, 'r:' .. id)
    if amount then
      give_back(h, amount)
      redis.call('HDEL', h, 'r:' .. id)
      redis.call('ZREM', z, id)
    end
    redis.call('HINCRBY', h, 'used_tokens', ARGV[a + 1])
    redis.call('HINCRBY', h, 'used_cost', ARGV[a + 2])
  end
end
return 1
"""

# Loads a scope's month from the database, unless another process already did.
# KEYS[1] hash. ARGV: used tokens, used cost (micro-USD), expire at (unix seconds).
INIT_QUOTA = """
if redis.call('HSETNX', KEYS[1], 'init', '1') == 1 then
  redis.call('HSET', KEYS[1], 'used_tokens', ARGV[1], 'used_cost', ARGV[2],
             'reserved_tokens', '0', 'reserved_cost', '0')
  redis.call('EXPIREAT', KEYS[1], ARGV[3])
end
return 1
"""

# Sets a loaded scope's used totals to the database's (the periodic reconciliation).
# KEYS[1] hash. ARGV: used tokens, used cost (micro-USD).
RECONCILE_QUOTA = """
if redis.call('HEXISTS', KEYS[1], 'init') == 0 then return 0 end
redis.call('HSET', KEYS[1], 'used_tokens', ARGV[1], 'used_cost', ARGV[2])
return 1
"""

# What a bucket holds now, without taking anything. KEYS[1] bucket. ARGV: capacity, rate.
# Returns {remaining, ms until full}.
PEEK = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local cap, rate = tonumber(ARGV[1]), tonumber(ARGV[2])
local v = redis.call('HMGET', KEYS[1], 'level', 'ts')
local level, ts = tonumber(v[1]), tonumber(v[2])
if level == nil then return {math.floor(cap), 0} end
level = math.min(cap, level + math.max(0, now - ts) * rate)
return {math.max(0, math.floor(level)), math.ceil((cap - level) / rate * 1000)}
"""
