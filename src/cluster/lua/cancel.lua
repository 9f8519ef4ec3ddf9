-- KEYS: the default lane's stream, then task records. ARGV: TTL (s) for
-- cancelled records, the consumer group, then per record the item index
-- to cancel (`-1` for the whole task), the task id and its entry id as the
-- client knows it ('' when it does not): a quick task the client sent as a
-- transaction has no `e` in its record (see `client/fresh.rs`).
-- A pending task has the item marked; once every item is cancelled the
-- record is marked `c` and workers drop it. Returns, per record, 2 if the
-- whole task is now cancelled, 1 if the item is, 0 if the task already
-- started (or is gone).
-- A quick task (`q` = '1', see `submit.lua`) runs from its entry as soon
-- as a worker's blocking read delivers it, before any script marks its
-- record started: once the group has delivered its entry (it is pending),
-- it counts as started. A quick task cancelled before that loses its entry
-- (no worker will see it); one with only some items cancelled gets a
-- plain entry instead (at the back of the queue), so that the worker's
-- start reads which items to skip. A quick task whose entry nobody knows
-- (the reply that named it was lost) may have been delivered, so it counts
-- as started too.
local out = {}
for i = 2, #KEYS do
  local k = KEYS[i]
  local o = 3 * i - 3
  local idx, task = ARGV[o], ARGV[o + 1]
  local r = redis.call('HMGET', k, 'st', 'q', 'e')
  local st = r[1]
  local e = r[3]
  if not e and ARGV[o + 2] and ARGV[o + 2] ~= '' then e = ARGV[o + 2] end
  if st == 'p' and r[2] == '1' then
    if not e then
      st = 'r'
    else
      -- No group (a server that lost it): whether it was delivered is
      -- unknown, so it is not cancelled.
      local ok, p = pcall(redis.call, 'XPENDING', KEYS[1], ARGV[2], e, e, 1)
      if not ok or p[1] then st = 'r' end
    end
  end
  if st == 'c' then
    out[i - 1] = 2
  elseif st == 'p' then
    local whole = (idx == '-1')
    if not whole then
      if redis.call('HSETNX', k, 'x' .. idx, '1') == 1 then
        redis.call('HINCRBY', k, 'x', 1)
      end
      whole = (tonumber(redis.call('HGET', k, 'x')) or 0) >= (tonumber(redis.call('HGET', k, 'n')) or 1)
    end
    if whole then
      if r[2] == '1' then redis.call('XDEL', KEYS[1], e) end
      redis.call('HSET', k, 'st', 'c')
      redis.call('EXPIRE', k, ARGV[1])
      out[i - 1] = 2
    else
      if r[2] == '1' then
        redis.call('XDEL', KEYS[1], e)
        local e = redis.call('XADD', KEYS[1], '*', 't', task)
        redis.call('HSET', k, 'q', '0', 'e', e)
      end
      out[i - 1] = 1
    end
  else
    out[i - 1] = 0
  end
end
return out
