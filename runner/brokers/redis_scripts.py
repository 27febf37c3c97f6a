"""The Lua scripts of the Redis broker (see :mod:`runner.brokers.redis` for the key layout
and the guarantees): each state change of a message is one script, so it is atomic."""

PRIORITY_STEP = 10**12
WAKE_KEEP = 64  # tokens kept per queue: enough to wake every idle worker
MAX_IDLE_BLOCK = 1.0  # seconds: also how soon expired claims and due etas are noticed
DONE_KEEP = 600  # seconds a request token is remembered (longer than any retrying of a call)

_RELEASE = """
local function release(prefix, zkey, now)
  local ids = redis.call('ZRANGEBYSCORE', prefix .. zkey, '-inf', now, 'LIMIT', 0, 1000)
  for _, id in ipairs(ids) do
    local info = redis.call('HGET', prefix .. 'info', id)
    redis.call('ZREM', prefix .. zkey, id)
    if info then
      local tab = string.find(info, '\\t', 1, true)
      local queue = string.sub(info, 1, tab - 1)
      redis.call('ZADD', prefix .. 'q:' .. queue, string.sub(info, tab + 1), id)
      redis.call('LPUSH', prefix .. 'wake:' .. queue, 1)
      redis.call('LTRIM', prefix .. 'wake:' .. queue, 0, WAKE_LAST)
    end
  end
end
""".replace("WAKE_LAST", str(WAKE_KEEP - 1))

_PUT = """
local function put(prefix, task_id, queue, priority, eta, body, now)
  local seq = redis.call('INCR', prefix .. 'seq')
  local score = string.format('%d', (9 - priority) * PRIORITY_STEP + seq)
  local id = task_id .. '#' .. seq
  redis.call('HSET', prefix .. 'body', id, body)
  redis.call('HSET', prefix .. 'info', id, queue .. '\\t' .. score)
  if eta > now then
    redis.call('ZADD', prefix .. 'delayed', eta, id)
  else
    redis.call('ZADD', prefix .. 'q:' .. queue, score, id)
    redis.call('LPUSH', prefix .. 'wake:' .. queue, 1)
    redis.call('LTRIM', prefix .. 'wake:' .. queue, 0, WAKE_LAST)
  end
end
""".replace("WAKE_LAST", str(WAKE_KEEP - 1)).replace("PRIORITY_STEP", str(PRIORITY_STEP))

_FORGET = """
local function forget(prefix, id)
  local info = redis.call('HGET', prefix .. 'info', id)
  if info then
    local tab = string.find(info, '\\t', 1, true)
    redis.call('ZREM', prefix .. 'q:' .. string.sub(info, 1, tab - 1), id)
  end
  redis.call('ZREM', prefix .. 'unacked', id)
  redis.call('ZREM', prefix .. 'delayed', id)
  redis.call('HDEL', prefix .. 'body', id)
  redis.call('HDEL', prefix .. 'info', id)
  redis.call('HDEL', prefix .. 'deliveries', id)
end
"""

# Run once per request token: a call retried after a lost reply does nothing again. The token
# is written when the script has done its work (_DONE), so a script that failed half way (no
# rollback in Redis) is not taken for done when it is sent again.
_ONCE = """
if redis.call('EXISTS', ARGV[1] .. 'done:' .. ARGV[#ARGV]) == 1 then
  return 1
end
"""
_DONE = """
redis.call('SET', ARGV[1] .. 'done:' .. ARGV[#ARGV], 1, 'EX', DONE_KEEP)
""".replace("DONE_KEEP", str(DONE_KEEP))

# ARGV: prefix, now, then groups of 5: id, queue, priority, eta, body; token
ENQUEUE = _PUT + _ONCE + """
local prefix, now = ARGV[1], tonumber(ARGV[2])
for i = 3, #ARGV - 1, 5 do
  put(prefix, ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3]), ARGV[i + 4], now)
end
""" + _DONE + """
return 1
"""

# ARGV: prefix, now, deadline, limit, token, queues...
FETCH = _RELEASE + """
local prefix, now, deadline, limit = ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local done = prefix .. 'done:' .. ARGV[5]
local out, count = {}, 0
local seen = redis.call('GET', done)
if seen then  -- the same fetch again (its reply was lost): the claims it made, if still ours
  for _, id in ipairs(cmsgpack.unpack(seen)) do
    local body = redis.call('HGET', prefix .. 'body', id)
    local info = redis.call('HGET', prefix .. 'info', id)
    if body and info and redis.call('ZSCORE', prefix .. 'unacked', id) then
      out[#out + 1] = id
      out[#out + 1] = string.sub(info, 1, string.find(info, '\t', 1, true) - 1)
      out[#out + 1] = body
      out[#out + 1] = redis.call('HGET', prefix .. 'deliveries', id)
    end
  end
  return out
end
release(prefix, 'delayed', now)
release(prefix, 'unacked', now)
local ids = {}
for i = 6, #ARGV do
  local queue = ARGV[i]
  if count < limit then
    local popped = redis.call('ZPOPMIN', prefix .. 'q:' .. queue, limit - count)
    for j = 1, #popped, 2 do
      local id = popped[j]
      local body = redis.call('HGET', prefix .. 'body', id)
      if body then
        redis.call('ZADD', prefix .. 'unacked', deadline, id)
        local n = redis.call('HINCRBY', prefix .. 'deliveries', id, 1)
        out[#out + 1] = id
        out[#out + 1] = queue
        out[#out + 1] = body
        out[#out + 1] = n
        ids[#ids + 1] = id
        count = count + 1
      end
    end
  end
end
if count > 0 then redis.call('SET', done, cmsgpack.pack(ids), 'EX', DONE_KEEP) end
return out
""".replace("DONE_KEEP", str(DONE_KEEP))

# ARGV: prefix, ids...
ACK = _FORGET + """
for i = 2, #ARGV do forget(ARGV[1], ARGV[i]) end
return 1
"""

# ARGV: prefix, uncount (1: the claim is not counted as a delivery), ids...
REQUEUE = """
local prefix, uncount = ARGV[1], ARGV[2] == '1'
for i = 3, #ARGV do
  local id = ARGV[i]
  if redis.call('ZREM', prefix .. 'unacked', id) == 1 then
    local info = redis.call('HGET', prefix .. 'info', id)
    if info then
      local tab = string.find(info, '\\t', 1, true)
      local queue = string.sub(info, 1, tab - 1)
      redis.call('ZADD', prefix .. 'q:' .. queue, string.sub(info, tab + 1), id)
      if uncount then redis.call('HINCRBY', prefix .. 'deliveries', id, -1) end
      redis.call('LPUSH', prefix .. 'wake:' .. queue, 1)
    end
  end
end
return 1
"""

# ARGV: prefix, deadline, ids...
EXTEND = """
for i = 3, #ARGV do redis.call('ZADD', ARGV[1] .. 'unacked', 'XX', ARGV[2], ARGV[i]) end
return 1
"""

# ARGV: prefix, now, old id, id, queue, priority, eta, body, token
RETRY = _FORGET + _PUT + _ONCE + """
local prefix, now = ARGV[1], tonumber(ARGV[2])
forget(prefix, ARGV[3])
put(prefix, ARGV[4], ARGV[5], tonumber(ARGV[6]), tonumber(ARGV[7]), ARGV[8], now)
""" + _DONE + """
return 1
"""

# ARGV: prefix, queues...
PURGE = _FORGET + """
local prefix, count = ARGV[1], 0
local wanted = {}
for i = 2, #ARGV do
  wanted[ARGV[i]] = true
  for _, id in ipairs(redis.call('ZRANGE', prefix .. 'q:' .. ARGV[i], 0, -1)) do
    forget(prefix, id)
    count = count + 1
  end
end
for _, id in ipairs(redis.call('ZRANGE', prefix .. 'delayed', 0, -1)) do
  local info = redis.call('HGET', prefix .. 'info', id)
  if info and wanted[string.sub(info, 1, string.find(info, '\\t', 1, true) - 1)] then
    forget(prefix, id)
    count = count + 1
  end
end
return count
"""
