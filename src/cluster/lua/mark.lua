-- The start of quick tasks (see `submit.lua`) that a worker's blocking
-- group read delivered: the worker runs them from their entries and sends
-- this without waiting for its reply, unless it must check the client's
-- liveness first.
-- KEYS: the default lane's stream, then per task: its record, its
-- client's events, its client's liveness key.
-- ARGV: group, worker, delivery token, then per task: entry id, task id,
-- the worker's cached liveness value of its client ('' for none).
-- A record still pending (`st` = 'p'; cancel never cancels a delivered
-- quick entry) becomes running under this worker as `start` would make
-- it, its first attempt, and its client is told it started. Any other
-- record (gone, or started by another path) is left alone and its entry
-- acknowledged unless another path started it: the worker must not run it (it is told so when it waits
-- for the reply; if it ran already, its finish finds no pending record
-- and delivers nothing).
-- Returns per task {'run', liveness, server time in ms} (liveness '=' when
-- it equals the cached value, and then no time) or {'gone'}.
local out, lists, order = {}, {}, {}
local n = (#KEYS - 1) / 3
for i = 1, n do
  local rec, ev, live = KEYS[2 + (i - 1) * 3], KEYS[3 + (i - 1) * 3], KEYS[4 + (i - 1) * 3]
  local entry, task, cached = ARGV[4 + (i - 1) * 3], ARGV[5 + (i - 1) * 3], ARGV[6 + (i - 1) * 3]
  if redis.call('HGET', rec, 'st') == 'p' then
    redis.call('HSET', rec, 'st', 'r', 'o', ARGV[2], 'd', ARGV[3], 'at', '1')
    local l = lists[ev]
    if not l then
      l = {ev, 'NOMKSTREAM', '*', 'k', 's'}
      lists[ev] = l
      order[#order + 1] = ev
    end
    l[#l + 1] = 't'
    l[#l + 1] = task
    local v = redis.call('GET', live) or ''
    if v ~= '' and v == cached then
      out[i] = {'run', '=', ''}
    else
      local now = redis.call('TIME')
      out[i] = {'run', v, tostring(tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000))}
    end
  else
    local st = redis.call('HGET', rec, 'st')
    -- Started by another path ('r'): that one acknowledges it.
    if st ~= 'r' then redis.call('XACK', KEYS[1], ARGV[1], entry) end
    out[i] = {'gone'}
  end
end
for _, ev in ipairs(order) do redis.call('XADD', unpack(lists[ev])) end
return out
