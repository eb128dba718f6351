"""The Lua scripts behind the shared capacity slots (see ``cluster/capacity.py``).

Per (provider, service) three sorted sets share one hash tag:
``ic:slot:{<provider>:<index>}:leases`` (lease id → expiry, Redis clock, ms),
``...:wait`` (waiter id → when it first queued, the FIFO order) and ``...:wexp``
(waiter id → expiry). Every script first drops what expired, so a replica that died
holding leases or queued waiters frees them after their TTL without anyone's help.
Every change of a slot count is published on the events channel as
``<provider> <index> <in use> [<waiter id>...]`` from inside the script, so subscribers
see counts in the order Redis applied them; the waiter ids are the heads of the queue
that may now take a free slot.
"""

from __future__ import annotations

_PRELUDE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function purge(leases, wait, wexp)
  redis.call('ZREMRANGEBYSCORE', leases, '-inf', now)
  if wait then
    local dead = redis.call('ZRANGEBYSCORE', wexp, '-inf', now)
    if #dead > 0 then
      redis.call('ZREM', wait, unpack(dead))
      redis.call('ZREMRANGEBYSCORE', wexp, '-inf', now)
    end
  end
end
"""

# KEYS: (leases, wait, wexp) per candidate, in preference order.
# ARGV: lease id, lease ttl ms, waiter id, waiter ttl ms, mode ('bg' | 'wait'), channel,
#       then one limit per candidate, then one event name ("<provider> <index>") per candidate.
# Returns the 1-based candidate taken, or 0 (a 'wait' caller is then queued on every key).
ACQUIRE = (
    _PRELUDE
    + """
local lease, lease_ttl = ARGV[1], tonumber(ARGV[2])
local waiter, waiter_ttl, mode, channel = ARGV[3], tonumber(ARGV[4]), ARGV[5], ARGV[6]
local n = #KEYS / 3
local keep = math.max(lease_ttl, waiter_ttl) * 4
for i = 1, n do
  local leases, wait, wexp = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
  local limit = tonumber(ARGV[6 + i])
  purge(leases, wait, wexp)
  local used = redis.call('ZCARD', leases)
  if used < limit then
    local ok
    if mode == 'bg' then
      ok = redis.call('ZCARD', wait) == 0
    else
      local ahead = redis.call('ZRANK', wait, waiter)
      if not ahead then ahead = redis.call('ZCARD', wait) end
      ok = ahead < limit - used
    end
    if ok then
      redis.call('ZADD', leases, now + lease_ttl, lease)
      redis.call('PEXPIRE', leases, keep)
      if mode == 'wait' then
        for j = 1, n do
          redis.call('ZREM', KEYS[3 * j - 1], waiter)
          redis.call('ZREM', KEYS[3 * j], waiter)
        end
      end
      redis.call('PUBLISH', channel, ARGV[6 + n + i] .. ' ' .. (used + 1))
      return i
    end
  end
end
if mode == 'wait' then
  for i = 1, n do
    redis.call('ZADD', KEYS[3 * i - 1], 'NX', now, waiter)
    redis.call('ZADD', KEYS[3 * i], now + waiter_ttl, waiter)
    redis.call('PEXPIRE', KEYS[3 * i - 1], keep)
    redis.call('PEXPIRE', KEYS[3 * i], keep)
  end
end
return 0
"""
)

# Publishes the count of a slot and, when slots are free, the waiters now at the head of
# its queue (they are woken by id, wherever they wait).
_ANNOUNCE = """
local function announce(channel, name, leases, wait, limit)
  local used = redis.call('ZCARD', leases)
  local message = name .. ' ' .. used
  local free = limit - used
  if free > 0 then
    local heads = redis.call('ZRANGE', wait, 0, free - 1)
    if #heads > 0 then message = message .. ' ' .. table.concat(heads, ' ') end
  end
  redis.call('PUBLISH', channel, message)
end
"""

# KEYS: (leases, wait, wexp) per candidate. ARGV: lease id, channel, then (event name,
# limit) per candidate. Drops the lease wherever it is (a caller cut off mid-acquire does
# not know which key it got) and announces each slot it freed. Returns how many it removed.
RELEASE = (
    _PRELUDE
    + _ANNOUNCE
    + """
local removed = 0
for i = 1, #KEYS / 3 do
  local leases, wait, wexp = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
  purge(leases, wait, wexp)
  if redis.call('ZREM', leases, ARGV[1]) == 1 then
    removed = removed + 1
    announce(ARGV[2], ARGV[1 + 2 * i], leases, wait, tonumber(ARGV[2 + 2 * i]))
  end
end
return removed
"""
)

# KEYS: (leases, wait, wexp) per key the waiter queued on. ARGV: waiter id, channel, then
# (event name, limit) per key. The waiter leaves every queue; the new heads are woken.
LEAVE = (
    _PRELUDE
    + _ANNOUNCE
    + """
for i = 1, #KEYS / 3 do
  local leases, wait, wexp = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
  redis.call('ZREM', wait, ARGV[1])
  redis.call('ZREM', wexp, ARGV[1])
  purge(leases, wait, wexp)
  announce(ARGV[2], ARGV[1 + 2 * i], leases, wait, tonumber(ARGV[2 + 2 * i]))
end
return 1
"""
)

# KEYS: the leases set of each held lease. ARGV: lease ttl ms, then (lease id, limit) per key.
# Returns per lease 1 = renewed, 2 = it had expired and was taken again, 0 = expired and the
# slot is now full (the holder runs on without a lease).
RENEW = (
    _PRELUDE
    + """
local lease_ttl = tonumber(ARGV[1])
local out = {}
for i = 1, #KEYS do
  local lease, limit = ARGV[2 * i], tonumber(ARGV[2 * i + 1])
  purge(KEYS[i])
  if redis.call('ZSCORE', KEYS[i], lease) then
    redis.call('ZADD', KEYS[i], now + lease_ttl, lease)
    out[i] = 1
  elseif redis.call('ZCARD', KEYS[i]) < limit then
    redis.call('ZADD', KEYS[i], now + lease_ttl, lease)
    out[i] = 2
  else
    out[i] = 0
  end
  redis.call('PEXPIRE', KEYS[i], lease_ttl * 4)
end
return out
"""
)

# KEYS: leases sets. Returns the live count of each.
COUNT = (
    _PRELUDE
    + """
local out = {}
for i = 1, #KEYS do
  purge(KEYS[i])
  out[i] = redis.call('ZCARD', KEYS[i])
end
return out
"""
)
