-- The start of a task, shared by `start` (KEYS and ARGV as given) and
-- `claim` (which reads the entry and computes the keys).
-- K: queue, task, client events, client liveness, client finished-bitmap.
-- A: entry id, group, worker, delivery token, task id, task sequence
-- number (decimal; -1 when too large for the bitmap), the worker's cached
-- liveness value of this client ('' for none), '1' when the entry was
-- delivered before (taken over after its lease expired).
-- An entry other than the one `submit` added for the task (a replayed
-- entry) is dropped, and so is a task whose bit in the client's bitmap says
-- it already finished (a record written again after it finished).
-- Returns {'gone'}, {'cancelled'}, {'lost', owner, starts} or {'run',
-- trampoline, build, args, signature, items, cancelled indices, nonce,
-- liveness, server time in ms, run-time limit in ms}; liveness is '=' (and
-- the time is not read) when it equals the cached value. Retrying with the
-- same delivery token does not count a second delivery.
-- `seen`, when given, keeps the liveness values this script call has read
-- (a claim of several tasks of one client reads it once) and collects the
-- "started" events, which `announce` then adds, one per client.
local function start(K, A, seen)
  local function drop()
    redis.call('XACK', K[1], A[2], A[1])
    tidy(K[1], A[2], true, A[1])
  end
  local seq = tonumber(A[6]) or -1
  if seq >= 0 and redis.call('GETBIT', K[5], seq) == 1 then
    drop()
    redis.call('DEL', K[2])
    return {'gone'}
  end
  local r = redis.call('HMGET', K[2], 'st', 'e', 'at', 'd', 'm', 'o',
    'f', 'b', 'a', 's', 'n', 'x', 'nc', 'tl', 'q')
  local st, entry = r[1], r[2]
  if (not st) or st == 'x' or (entry and entry ~= A[1]) then
    -- finished, rejected, never existed, or a second entry naming the task
    drop()
    return {'gone'}
  end
  if st == 'c' then
    redis.call('DEL', K[2])
    drop()
    return {'cancelled'}
  end
  local at = tonumber(r[3]) or 0
  if r[4] ~= A[4] then at = at + 1 end
  -- A quick task (see `submit.lua`) still pending on a redelivery was
  -- delivered to a blocking read whose `mark` never landed: it may have
  -- run, so that counts as an attempt, and its client, never told that it
  -- started, is told now.
  local untold = st == 'p' and r[15] == '1' and A[8] == '1'
  if untold then at = at + 1 end
  local m = tonumber(r[5]) or 1
  if at > m then
    if r[4] ~= A[4] then redis.call('HSET', K[2], 'at', tostring(at)) end
    return {'lost', r[6] or '', tostring(at - 1)}
  end
  redis.call('HSET', K[2], 'st', 'r', 'o', A[3], 'd', A[4], 'at', tostring(at))
  if at == 1 or untold then
    if seen then
      -- One "started" event per client for the whole claim (see `announce`).
      local l = seen.started[K[3]]
      if not l then
        l = {}
        seen.started[K[3]] = l
        seen.streams[#seen.streams + 1] = K[3]
      end
      l[#l + 1] = A[5]
    else
      redis.call('XADD', K[3], 'NOMKSTREAM', '*', 'k', 's', 't', A[5])
    end
  end
  local out = {'run'}
  for i = 7, 11 do out[i - 5] = r[i] or '' end
  local cancelled = {}
  if (tonumber(r[12]) or 0) > 0 then
    for i = 0, (tonumber(r[11]) or 0) - 1 do
      if redis.call('HEXISTS', K[2], 'x' .. i) == 1 then cancelled[#cancelled + 1] = tostring(i) end
    end
  end
  out[7] = table.concat(cancelled, ',')
  out[8] = r[13] or ''
  local live = seen and seen[K[4]]
  if not live then
    live = redis.call('GET', K[4]) or ''
    if seen then seen[K[4]] = live end
  end
  if live ~= '' and live == A[7] then
    out[9] = '='
    out[10] = ''
  else
    out[9] = live
    local now = redis.call('TIME')
    out[10] = tostring(tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000))
  end
  out[11] = r[14] or '0'
  return out
end

-- Adds the "started" events `start` collected in `seen`: one entry per
-- client's event stream, naming every task (a `t` field each).
local function announce(seen)
  for _, ev in ipairs(seen.streams) do
    local args = {ev, 'NOMKSTREAM', '*', 'k', 's'}
    for _, task in ipairs(seen.started[ev]) do
      args[#args + 1] = 't'
      args[#args + 1] = task
    end
    redis.call('XADD', unpack(args))
  end
end
