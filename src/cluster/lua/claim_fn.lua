-- Starts read entries `es` of the default lane (KEYS[1]) as
-- `start` does; ARGV as for `claim`. Returns one array per entry: {entry
-- id, task id} for a malformed task id (the caller drops it) or a start
-- that failed (the caller starts it on its own), or {entry id, task id,
-- start's reply...}.
local function start_entries(KEYS, ARGV, es)
  local t = ARGV[3]
  local all, seen = {}, {started = {}, streams = {}}
  for n = 1, #es do
    local e = es[n]
    local id, fields, task = e[1], e[2], ''
    for j = 1, #fields, 2 do
      if fields[j] == 't' then task = fields[j + 1] end
    end
    local client, hex = string.match(task, '^(%x+)%.(%x+)$')
    if not client or #client ~= 16 or #hex > 16 then
      all[#all + 1] = {id, task}
    else
      local seq = -1
      if #hex <= 8 then seq = tonumber(hex, 16) end
      local cached = ''
      if ARGV[6] == client then cached = ARGV[5] end
      -- A record that is not a hash fails its start alone: the worker
      -- starts it again by itself and rejects it (see `worker/claim.rs`).
      local ok, out = pcall(start,
        {KEYS[1], t .. ':t:' .. task, t .. ':ev:' .. client, t .. ':live:' .. client, t .. ':fin:' .. client},
        {id, ARGV[1], ARGV[2], ARGV[4], task, tostring(seq), cached}, seen)
      local one = {id, task}
      if ok then
        for i = 1, #out do one[#one + 1] = out[i] end
      end
      all[#all + 1] = one
    end
  end
  announce(seen)
  return all
end

-- KEYS: the default lane's stream. ARGV (as passed to `claim`): group, worker (consumer), the
-- namespace's key tag (`{ns}`), delivery token, the worker's cached
-- liveness value and the client it belongs to ('' for none), and how many
-- entries to claim at most (default 1).
-- `acked`: the entry the caller has just acknowledged, if any (see `tidy`).
-- Reads new entries (never blocks) and starts their tasks as `start` does,
-- in the same call: a worker's finish of its tasks and the claim of the
-- next make one round trip. The keys of a task are computed from its id;
-- they share the namespace's hash tag with the stream, so they live on the
-- same Redis Cluster node.
-- Returns {} (the group is missing: the caller's blocking read recreates
-- it), {newest} when there is nothing new (the id of the newest entry, or
-- 0-0; the worker may then block in a group read), or one array per entry read: {entry id, task id}
-- for a malformed task id (the caller drops it), or {entry id, task id,
-- start's reply...}.
local function claim(KEYS, ARGV, acked)
  local want = tonumber(ARGV[7]) or 1
  if want < 1 then want = 1 end
  local ok, reply = pcall(redis.call, 'XREADGROUP', 'GROUP', ARGV[1], ARGV[2],
    'COUNT', want, 'STREAMS', KEYS[1], '>')
  if not ok then return {} end
  local es = reply and reply[1] and reply[1][2]
  if not (es and es[1]) then
    local newest = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
    -- Nothing new: this worker may go idle, so leave no done entry behind.
    if newest[1] then
      tidy(KEYS[1], ARGV[1], true, acked, newest[1][1])
      return {newest[1][1]}
    end
    tidy(KEYS[1], ARGV[1], true, acked)
    return {'0-0'}
  end
  tidy(KEYS[1], ARGV[1], false, acked)
  return start_entries(KEYS, ARGV, es)
end
