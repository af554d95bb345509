"""The Lua scripts of the Redis store: each is one atomic step on one limit's state (``_redis.py``).

Every limit ``name`` has three keys, all with the hash tag ``{name}`` so that one script's keys share a Redis
Cluster slot:

- ``azureml-chat:v1:{name}:state``, a hash: the cooldown's deadline (``until``) and the release after it
  (``gen``, ``size``, ``granted``, ``done``, ``total``, ``ceiling``, ``calm``), the numbers of ``_release.py``'s
  ``Release``, whose rules ``ANSWERED`` repeats;
- ``...:rpm`` and ``...:tpm``: each budget as GCRA's *theoretical arrival time* (TAT), the moment its bucket is
  full again. A request reserves ``interval = 60 s / RPM`` by pushing the TAT on (``max(tat, now) + interval``)
  and goes ``tat - now`` from now: requests leave evenly spaced with a burst of one, exactly like the in-process
  bucket. The token budget is pushed on by each answer's tokens, and a request waits while it is more than its
  burst (one second's worth) ahead of now. GCRA rather than a sliding window: one number per budget, pacing
  rather than a counter that refills in a lump at each window's edge, and a variable cost (tokens) for free.

Time is Redis's own (``TIME``, in milliseconds), so the machines sharing a limit need no common clock. Every write
sets an expiry: a budget's key vanishes when its bucket is full again (which is what a missing key means), and the
state vanishes ``STORE_RELEASE_TTL`` after the last sign of progress, so a process that died while admitted
cannot hold a release for ever. Numbers are stored with ``%.3f``: Lua's ``tostring`` keeps 14 digits, which would
round a millisecond timestamp to tens of milliseconds.
"""

from __future__ import annotations

__all__ = ["ACQUIRE", "ANSWERED", "CHARGE", "START_COOLDOWN", "UNRESERVE", "keys"]


def keys(name: str) -> list[str]:
    """The state, request-budget and token-budget keys of the limit ``name``."""
    prefix = f"azureml-chat:v1:{{{name}}}"
    return [f"{prefix}:state", f"{prefix}:rpm", f"{prefix}:tpm"]


_NOW = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + tonumber(clock[2]) / 1000
local function fmt(value) return string.format('%.3f', value) end
"""

# KEYS: state, rpm, tpm. ARGV: request interval ms (0: no request budget), ms per token (0: no token budget),
# token burst ms, state ttl ms, lapse ms. Returns {generation, wait ms}: generation -1 when not admitted
# (wait > 0: the cooldown or the token budget; wait 0: the release's stage is full). A full stage that made no
# progress (no place claimed, no answer) for the lapse gives its unanswered places again: a process that died
# while admitted never answers, nor does one whose ACQUIRE timed out on its side and ran on Redis's later.
ACQUIRE = (
    _NOW
    + """
local state = redis.call('HMGET', KEYS[1], 'until', 'calm', 'gen', 'size', 'granted', 'done', 'since')
local releasing = state[1] and state[2] ~= '1'
if releasing then
  local left = tonumber(state[1]) - now
  if left > 0 then return {-1, fmt(left)} end
end
local per_token = tonumber(ARGV[2])
if per_token > 0 then
  local spent = tonumber(redis.call('GET', KEYS[3]) or 0) - tonumber(ARGV[3]) - now
  if spent > 0 then return {-1, fmt(spent)} end
end
local generation = 0
if releasing then
  local granted = tonumber(state[5])
  if granted >= tonumber(state[4]) then
    if now - tonumber(state[7] or now) <= tonumber(ARGV[5]) then return {-1, '0'} end
    granted = tonumber(state[6])
  end
  redis.call('HSET', KEYS[1], 'granted', granted + 1, 'since', fmt(now))
  redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[4])))
  generation = tonumber(state[3])
end
local wait = 0
local interval = tonumber(ARGV[1])
if interval > 0 then
  local tat = math.max(tonumber(redis.call('GET', KEYS[2]) or 0), now)
  wait = tat - now
  redis.call('SET', KEYS[2], fmt(tat + interval), 'PX', math.ceil(wait + interval))
end
return {generation, fmt(wait)}
"""
)

# KEYS: state. ARGV: cooldown ms, state ttl ms. A new cooldown (none under way) restarts the release: a new
# generation (never below the clock's milliseconds, so one reused after the state expired cannot match an old
# ticket), stage 1, and what the interrupted release got answered as the ceiling.
START_COOLDOWN = (
    _NOW
    + """
local state = redis.call('HMGET', KEYS[1], 'until', 'gen', 'total', 'ceiling')
local deadline = tonumber(state[1] or 0)
if deadline <= now then
  local ceiling = tonumber(state[4] or 0)
  local total = tonumber(state[3] or 0)
  if total > 0 then ceiling = total end
  local generation = math.max(tonumber(state[2] or 0) + 1, math.floor(now))
  redis.call('HSET', KEYS[1], 'gen', generation, 'size', 1, 'granted', 0, 'done', 0, 'total', 0,
             'ceiling', ceiling, 'calm', 0, 'since', fmt(deadline))
end
deadline = math.max(deadline, now + tonumber(ARGV[1]))
redis.call('HSET', KEYS[1], 'until', fmt(deadline))
redis.call('PEXPIRE', KEYS[1], math.ceil(deadline - now + tonumber(ARGV[2])))
return 1
"""
)

# KEYS: state. ARGV: generation, open_at (RELEASE_OPEN), state ttl ms. Release.answered: returns 1 when that
# made room (the next stage opened, or the release is over), else 0.
ANSWERED = (
    _NOW
    + """
local state = redis.call('HMGET', KEYS[1], 'gen', 'size', 'granted', 'done', 'total', 'ceiling', 'calm', 'until')
if not state[1] or state[7] == '1' or tonumber(state[1]) ~= tonumber(ARGV[1]) then return 0 end
local size, granted = tonumber(state[2]), tonumber(state[3])
local done, total, ceiling = tonumber(state[4]) + 1, tonumber(state[5]) + 1, tonumber(state[6])
local ttl = math.ceil(math.max(tonumber(state[8]) - now, 0) + tonumber(ARGV[3]))
if done >= size then
  if size >= math.max(tonumber(ARGV[2]), 2 * ceiling) then
    redis.call('HSET', KEYS[1], 'granted', 0, 'done', 0, 'total', total, 'size', 1, 'calm', 1,
               'since', fmt(now))
    redis.call('PEXPIRE', KEYS[1], ttl)
    return 1
  end
  if total < ceiling then size = math.min(2 * size, ceiling - total)
  elseif total - size < ceiling then size = 1
  else size = 2 * size end
  redis.call('HSET', KEYS[1], 'granted', 0, 'done', 0, 'total', total, 'size', size, 'since', fmt(now))
  redis.call('PEXPIRE', KEYS[1], ttl)
  return 1
end
if done == granted then
  redis.call('HSET', KEYS[1], 'granted', 0, 'done', 0, 'total', 0, 'size', 1, 'calm', 1,
             'since', fmt(now))
  redis.call('PEXPIRE', KEYS[1], ttl)
  return 1
end
redis.call('HSET', KEYS[1], 'done', done, 'total', total, 'since', fmt(now))
redis.call('PEXPIRE', KEYS[1], ttl)
return 0
"""
)

# KEYS: tpm. ARGV: ms the answer's tokens take at the budget's rate.
CHARGE = (
    _NOW
    + """
local tat = math.max(tonumber(redis.call('GET', KEYS[1]) or 0), now) + tonumber(ARGV[1])
redis.call('SET', KEYS[1], fmt(tat), 'PX', math.max(math.ceil(tat - now), 1))
return 1
"""
)

# KEYS: rpm. ARGV: request interval ms. A reserved request that was not sent: the budget's TAT moves back one
# interval (never before now, where a missing key puts it).
UNRESERVE = (
    _NOW
    + """
local tat = tonumber(redis.call('GET', KEYS[1]) or 0) - tonumber(ARGV[1])
if tat > now then
  redis.call('SET', KEYS[1], fmt(tat), 'PX', math.ceil(tat - now))
else
  redis.call('DEL', KEYS[1])
end
return 1
"""
)
