-- A busy worker's one script call per batch of tasks: finishes the tasks
-- it ran and claims (and starts) the next ones.
-- KEYS: the default lane's stream (which the claim reads), then five per
-- finished task: as for `finish` (its stream, task, result, client events,
-- client finished-bitmap).
-- ARGV: the number of finished tasks; the 7 arguments of `claim` (its
-- last, how many to claim: 0 for no claim); then the 8 arguments of
-- `finish` for each finished task.
-- The entries of each stream are acknowledged in one XACK, and each
-- client's bitmap gets its expiry once. The claim tidies the default lane
-- (the finished entries included); other streams, and the default lane
-- when nothing is claimed, are tidied here, exactly (as `finish` does).
-- Returns what `claim` returns ({} when nothing is claimed).
local n = tonumber(ARGV[1]) or 0
local c = {}
for i = 2, 8 do c[i - 1] = ARGV[i] end
local group = c[1]
local ids, order = {}, {}
for i = 1, n do
  local s, id = KEYS[2 + (i - 1) * 5], ARGV[9 + (i - 1) * 8]
  if not ids[s] then
    ids[s] = {}
    order[#order + 1] = s
  end
  local l = ids[s]
  l[#l + 1] = id
end
for _, s in ipairs(order) do redis.call('XACK', s, group, unpack(ids[s])) end
local seen = {}
for i = 1, n do
  local k, a = {}, {}
  for j = 1, 5 do k[j] = KEYS[1 + (i - 1) * 5 + j] end
  for j = 1, 8 do a[j] = ARGV[8 + (i - 1) * 8 + j] end
  finish(k, a, seen)
end
local want = tonumber(c[7]) or 0
local claiming = want > 0
for _, s in ipairs(order) do
  if s ~= KEYS[1] or not claiming then
    -- Exact, as `finish` alone tidies: no claim may follow before the
    -- worker goes idle. The entry just acknowledged was delivered, so with
    -- nothing pending everything up to it is done.
    local l = ids[s]
    tidy(s, group, true, l[#l], l[#l])
  end
end
if not claiming then return {} end
local mine = ids[KEYS[1]]
return claim(KEYS, c, mine and mine[#mine])
