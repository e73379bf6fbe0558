"""The Lua scripts the Redis broker runs: a publish, a batch publish, a page of a replay.

A script runs atomically in Redis, so a publish's checks (idempotency key, topic
cap), its ``XADD`` and its trimming happen with nothing in between; and a replay
page's check for trimmed history sees the same stream as the entries it returns.
``PUBLISH_MANY`` does ``PUBLISH``'s work for several topics in one script, all its
checks before its first write; on a cluster its topics' keys must share one slot.

Keys of one topic (``<prefix>{<topic>}`` is its stream; the braces make the topic
the keys' Redis Cluster hash tag, so a topic's keys share one slot):

* ``<prefix>{<topic>}:meta``: a hash, ``bytes`` (the retained entries' field bytes)
  and ``last`` (the newest id this script added);
* ``<prefix>{<topic>}:keys``: a hash, idempotency key -> id, for retained entries only;
* ``<prefix>:topics``: a sorted set of the prefix's topics, scored by when each
  expires (ms, Redis's clock). On a cluster it is in another slot, so the publish
  script cannot use it: ``ADMIT`` counts the topic first, in a script of its own.

Each entry holds the event's fields plus ``t`` (when it was added, ms, Redis's
clock: its age, whatever its id), ``p`` (the id of the entry before it, so a reader
can tell that one was trimmed before it read it) and, with an idempotency key, ``k``.
Every publish sets all four keys to expire ``ttl`` after it, so an idle topic leaves
nothing behind.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "ADMIT",
    "PRESENCE_READ",
    "PRESENCE_SYNC",
    "PUBLISH",
    "PUBLISH_MANY",
    "READ_PAGE",
    "RESERVED_FIELDS",
]

RESERVED_FIELDS: Final = frozenset({b"t", b"p", b"k"})

# Functions the scripts share. Redis's clock, not the caller's: every worker and host
# then agree on ages. A topic already counted (and not expired) may always publish; a
# new one only while the prefix has fewer than max_topics.
_CLOCK: Final = """
local function now_ms()
  local clock = redis.call('TIME')
  return tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
end
"""

_SHARED: Final = (
    _CLOCK
    + """
local function is_counted(topics, topic, now)
  local expires = redis.call('ZSCORE', topics, topic)
  return expires and tonumber(expires) > now
end

-- Whether `new` more topics fit under max_topics (expired ones removed first).
local function room_for(topics, new, max_topics, now)
  redis.call('ZREMRANGEBYSCORE', topics, '-inf', now)
  return redis.call('ZCARD', topics) + new <= max_topics
end

local function admits(topics, topic, max_topics, now)
  return is_counted(topics, topic, now) or room_for(topics, 1, max_topics, now)
end

-- Append an entry of `fields` (the event's field/value pairs) with id `id` ('*' for
-- Redis's) and idempotency key `key` ('' for none), trim the stream, and update its
-- meta and keys hashes. Returns the new id, or nil and Redis's error.
local function append(stream, meta, keys, id, key, event_fields, now, max_entries, max_bytes, ttl)
  local previous, bytes = '0-0', 0
  if redis.call('EXISTS', stream) == 1 then
    previous = redis.call('HGET', meta, 'last') or ''
    bytes = tonumber(redis.call('HGET', meta, 'bytes') or '0')
  end
  local fields = {}
  for i = 1, #event_fields do
    fields[i] = event_fields[i]
  end
  fields[#fields + 1] = 't'
  fields[#fields + 1] = tostring(now)
  if previous ~= '' then
    fields[#fields + 1] = 'p'
    fields[#fields + 1] = previous
  end
  if key ~= '' then
    fields[#fields + 1] = 'k'
    fields[#fields + 1] = key
  end
  local added = redis.pcall('XADD', stream, id, unpack(fields))
  if type(added) == 'table' and added.err then
    return nil, added.err
  end
  for i = 1, #fields do
    bytes = bytes + #fields[i]
  end

  -- Trim from the oldest entry while there are too many, too many bytes, or it is
  -- older than ttl; never the entry just added. Each entry is removed once, so the
  -- work is constant per publish on average.
  local length = redis.call('XLEN', stream)
  local cutoff = now - ttl
  local start, keep, count = '-', nil, 1
  while not keep do
    -- Usually the oldest entry stays, or it alone goes: read one first, more only
    -- as more go (an entry may be large).
    local batch = redis.call('XRANGE', stream, start, '+', 'COUNT', count)
    count = math.min(count * 2, 64)
    if #batch == 0 then
      break
    end
    for _, entry in ipairs(batch) do
      local entry_id, values = entry[1], entry[2]
      local size, at, entry_key = 0, nil, nil
      for i = 1, #values, 2 do
        size = size + #values[i] + #values[i + 1]
        if values[i] == 't' then
          at = tonumber(values[i + 1])
        elseif values[i] == 'k' then
          entry_key = values[i + 1]
        end
      end
      at = at or tonumber(string.match(entry_id, '^%d+'))
      if entry_id == added or not (length > max_entries or bytes > max_bytes or at <= cutoff) then
        keep = entry_id
        break
      end
      length = length - 1
      bytes = bytes - size
      if entry_key and redis.call('HGET', keys, entry_key) == entry_id then
        redis.call('HDEL', keys, entry_key)
      end
      start = '(' .. entry_id
    end
  end
  if keep and start ~= '-' then
    redis.call('XTRIM', stream, 'MINID', keep)
  end

  redis.call('HSET', meta, 'bytes', math.max(bytes, 0), 'last', added)
  if key ~= '' then
    redis.call('HSET', keys, key, added)
  end
  redis.call('PEXPIRE', stream, ttl)
  redis.call('PEXPIRE', meta, ttl)
  redis.call('PEXPIRE', keys, ttl)
  return added
end
"""
)

# KEYS: stream, meta, keys, topics (no topics on a cluster: ADMIT did that part).
# ARGV: topic, id ('*' for Redis's), max entries, max bytes, ttl (ms), max topics,
#       idempotency key ('' for none), then the event's field/value pairs.
# Returns {'added', id}, {'duplicate', id}, {'full', max topics} or {'refused', error}.
PUBLISH: Final = (
    _SHARED
    + """
local stream, meta, keys, topics = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local topic, id = ARGV[1], ARGV[2]
local max_entries, max_bytes = tonumber(ARGV[3]), tonumber(ARGV[4])
local ttl, max_topics, key = tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7]

if key ~= '' then
  local earlier = redis.call('HGET', keys, key)
  if earlier then
    -- Rewrite the key as it is: a write, so that a WAIT after this script on the
    -- same connection waits for the replicas to have everything up to here, the
    -- earlier event included (a retry after a 503 must mean replicated too). Since
    -- Redis 7.2, WAIT counts only the connection's own writes; before, any command.
    redis.call('HSET', keys, key, earlier)
    return {'duplicate', earlier}
  end
end

local now = now_ms()
if topics and not admits(topics, topic, max_topics, now) then
  return {'full', ARGV[6]}
end

local fields = {}
for i = 8, #ARGV do
  fields[#fields + 1] = ARGV[i]
end
local added, err = append(stream, meta, keys, id, key, fields, now, max_entries, max_bytes, ttl)
if not added then
  return {'refused', err}
end
if topics then
  redis.call('ZADD', topics, now + ttl, topic)
  redis.call('PEXPIRE', topics, ttl)
end
return {'added', added}
"""
)

# KEYS: stream, meta, keys of each topic in turn, then topics (not on a cluster).
# ARGV: topic count n, id ('*' for Redis's), max entries, max bytes, ttl (ms), max
#       topics, idempotency key ('' for none), field count f, the event's f
#       field/value strings, then the n topics.
# All or nothing: every check (each topic's key, the topic cap for the new topics, an
# id of the publisher's above each topic's newest, each key of the right type) comes
# before the first write. Returns {'ok', status_1, id_1, ..., status_n, id_n} with
# each status 'added' or 'duplicate'; or {'full', max topics}; or
# {'refused', topic, error} with nothing written.
PUBLISH_MANY: Final = (
    _SHARED
    + """
-- Whether stream id a is above b; both canonical '<ms>-<seq>' (no leading zeros), so
-- longer digits are larger. Lua numbers are doubles: 64-bit ids do not fit.
local function above(a, b)
  local a_ms, a_seq = string.match(a, '^(%d+)-(%d+)$')
  local b_ms, b_seq = string.match(b, '^(%d+)-(%d+)$')
  if #a_ms ~= #b_ms then
    return #a_ms > #b_ms
  end
  if a_ms ~= b_ms then
    return a_ms > b_ms
  end
  if #a_seq ~= #b_seq then
    return #a_seq > #b_seq
  end
  return a_seq > b_seq
end

local n, id = tonumber(ARGV[1]), ARGV[2]
local max_entries, max_bytes = tonumber(ARGV[3]), tonumber(ARGV[4])
local ttl, max_topics, key = tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7]
local field_count = tonumber(ARGV[8])
local fields = {}
for i = 1, field_count do
  fields[i] = ARGV[8 + i]
end
local first_topic = 9 + field_count
local topics = KEYS[3 * n + 1]
local now = now_ms()

local function topic_keys(i)
  return ARGV[first_topic + i - 1], KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
end

local earlier, new = {}, 0
for i = 1, n do
  local topic, stream, meta, keys = topic_keys(i)
  for _, name in ipairs({stream, meta, keys}) do
    local kind = redis.call('TYPE', name)['ok']
    local wanted = name == stream and 'stream' or 'hash'
    if kind ~= 'none' and kind ~= wanted then
      return {'refused', topic, 'WRONGTYPE key ' .. name .. ' holds a ' .. kind}
    end
  end
  if key ~= '' then
    earlier[i] = redis.call('HGET', keys, key)
  end
  if not earlier[i] then
    if topics and not is_counted(topics, topic, now) then
      new = new + 1
    end
    if id ~= '*' and redis.call('EXISTS', stream) == 1 then
      local newest = redis.call('HGET', meta, 'last')
      if not newest or newest == '' then
        local last = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)
        newest = last[1] and last[1][1] or '0-0'
      end
      if not above(id, newest) then
        -- Redis's own words for it, which the broker recognises.
        return {'refused', topic, 'ERR the ID is equal or smaller than the top item'}
      end
    end
  end
end
if topics and new > 0 and not room_for(topics, new, max_topics, now) then
  return {'full', ARGV[6]}
end

local out = {'ok'}
for i = 1, n do
  local topic, stream, meta, keys = topic_keys(i)
  if earlier[i] then
    -- A write, for a WAIT after this script: see PUBLISH.
    redis.call('HSET', keys, key, earlier[i])
    out[#out + 1] = 'duplicate'
    out[#out + 1] = earlier[i]
  else
    local added, err = append(stream, meta, keys, id, key, fields, now, max_entries, max_bytes, ttl)
    if not added then
      -- Not expected after the checks above; earlier topics are written already.
      return {'refused', topic, err}
    end
    if topics then
      redis.call('ZADD', topics, now + ttl, topic)
    end
    out[#out + 1] = 'added'
    out[#out + 1] = added
  end
end
if topics then
  redis.call('PEXPIRE', topics, ttl)
end
return out
"""
)

# KEYS: topics. ARGV: topic, ttl (ms), max topics.
# Counts the topic as PUBLISH does, until ttl from now. Returns {'ok', ''} or
# {'full', max topics}.
ADMIT: Final = (
    _SHARED
    + """
local topics, topic = KEYS[1], ARGV[1]
local ttl, max_topics = tonumber(ARGV[2]), tonumber(ARGV[3])
local now = now_ms()
if not admits(topics, topic, max_topics, now) then
  return {'full', ARGV[3]}
end
redis.call('ZADD', topics, now + ttl, topic)
redis.call('PEXPIRE', topics, ttl)
return {'ok', ''}
"""
)

# KEYS: stream. ARGV: after (exclusive), until (inclusive), max bytes.
# Returns {first, entry, ...}: the id of the stream's first entry ('' if it has none),
# then the entries after `after` up to `until`, stopping once their field bytes reach
# max bytes (at least one, if any).
READ_PAGE: Final = """
local head = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
local out = {head[1] and head[1][1] or ''}
local start, budget, size = '(' .. ARGV[1], tonumber(ARGV[3]), 0
while size < budget do
  local batch = redis.call('XRANGE', KEYS[1], start, ARGV[2], 'COUNT', 8)
  for _, entry in ipairs(batch) do
    out[#out + 1] = entry
    for _, value in ipairs(entry[2]) do
      size = size + #value
    end
    start = '(' .. entry[1]
    if size >= budget then
      break
    end
  end
  if #batch < 8 then
    break
  end
end
return out
"""

# Presence (see _presence.py). Keys of a topic, all in its slot: ``...:pw`` a sorted
# set, worker -> when its entries expire (ms, Redis's clock); ``...:ps`` a hash,
# worker -> its open streams; ``...:pj`` a sorted set, subject -> how many workers
# have it present; ``...:pm:<worker>`` a set, that worker's subjects. A worker's
# entries go when it stops refreshing them (a crash): whichever script runs next on
# the topic sweeps them, and returns the subjects that left with them.
_PRESENCE_SHARED: Final = (
    _CLOCK
    + """
local function remove_subject(subjects, subject, leaves)
  if tonumber(redis.call('ZINCRBY', subjects, -1, subject)) <= 0 then
    redis.call('ZREM', subjects, subject)
    leaves[#leaves + 1] = subject
  end
end

local function sweep(workers, streams, subjects, member_prefix, now, leaves)
  for _, worker in ipairs(redis.call('ZRANGEBYSCORE', workers, '-inf', now)) do
    local members = member_prefix .. worker
    for _, subject in ipairs(redis.call('SMEMBERS', members)) do
      remove_subject(subjects, subject, leaves)
    end
    redis.call('DEL', members)
    redis.call('HDEL', streams, worker)
    redis.call('ZREM', workers, worker)
  end
end
"""
)

# KEYS: workers, streams, subjects, this worker's members.
# ARGV: member key prefix, worker, ttl ms, streams open here, 1 if full, n,
#       n subjects to add, then subjects to remove (a full sync: ARGV after the
#       count is every subject present here, none to remove).
# Returns {resync, n joins, joins..., leaves...}; resync = 1 when this worker's
# entries had expired (it was away longer than the ttl) and a delta cannot apply.
PRESENCE_SYNC: Final = (
    _PRESENCE_SHARED
    + """
local workers, streams, subjects, mine = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local worker, ttl, open = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local full, n = ARGV[5] == '1', tonumber(ARGV[6])
local now = now_ms()
local joins, leaves = {}, {}
local expires = redis.call('ZSCORE', workers, worker)
local known = expires and tonumber(expires) > now
sweep(workers, streams, subjects, ARGV[1], now, leaves)
if not full and not known then
  local reply = {1, 0}
  for _, subject in ipairs(leaves) do
    reply[#reply + 1] = subject
  end
  return reply
end
local function add(subject)
  if redis.call('SADD', mine, subject) == 1 then
    if tonumber(redis.call('ZINCRBY', subjects, 1, subject)) == 1 then
      joins[#joins + 1] = subject
    end
  end
end
if full then
  local present = {}
  for i = 7, 6 + n do
    present[ARGV[i]] = true
  end
  for _, subject in ipairs(redis.call('SMEMBERS', mine)) do
    if not present[subject] then
      redis.call('SREM', mine, subject)
      remove_subject(subjects, subject, leaves)
    end
  end
  for i = 7, 6 + n do
    add(ARGV[i])
  end
else
  for i = 7, 6 + n do
    add(ARGV[i])
  end
  for i = 7 + n, #ARGV do
    if redis.call('SREM', mine, ARGV[i]) == 1 then
      remove_subject(subjects, ARGV[i], leaves)
    end
  end
end
if open > 0 or redis.call('EXISTS', mine) == 1 then
  redis.call('ZADD', workers, now + ttl, worker)
  redis.call('HSET', streams, worker, open)
  -- Three ttls: longer than any live worker's refresh, so only a topic nobody
  -- serves any more is left to expire.
  for _, key in ipairs({workers, streams, subjects, mine}) do
    redis.call('PEXPIRE', key, 3 * ttl)
  end
else
  redis.call('ZREM', workers, worker)
  redis.call('HDEL', streams, worker)
end
local reply = {0, #joins}
for _, subject in ipairs(joins) do
  reply[#reply + 1] = subject
end
for _, subject in ipairs(leaves) do
  reply[#reply + 1] = subject
end
return reply
"""
)

# KEYS: workers, streams, subjects. ARGV: member key prefix, subjects to list.
# Returns {streams, subjects present, n listed, listed..., leaves...} (leaves: of
# workers swept now).
PRESENCE_READ: Final = (
    _PRESENCE_SHARED
    + """
local workers, streams, subjects = KEYS[1], KEYS[2], KEYS[3]
local leaves = {}
sweep(workers, streams, subjects, ARGV[1], now_ms(), leaves)
local open = 0
for _, count in ipairs(redis.call('HVALS', streams)) do
  open = open + tonumber(count)
end
local listed = {}
local limit = tonumber(ARGV[2])
if limit > 0 then
  listed = redis.call('ZRANGE', subjects, 0, limit - 1)
end
local reply = {open, redis.call('ZCARD', subjects), #listed}
for _, subject in ipairs(listed) do
  reply[#reply + 1] = subject
end
for _, subject in ipairs(leaves) do
  reply[#reply + 1] = subject
end
return reply
"""
)
