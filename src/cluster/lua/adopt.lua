-- KEYS: the default lane's stream. ARGV: as for `claim` (group, worker,
-- key tag, delivery token, cached liveness value, its client, how many),
-- then the slot's own consumer name and the id of the newest entry this
-- slot adopted before ('0-0' for none).
-- Runs right after an idle slot's blocking `XREADGROUP` as its own consumer
-- (in the same pipeline): reads back what that read delivered (the slot
-- consumer's pending entries newer than the ones it adopted before, which
-- may still be running) and starts their tasks, as `claim` does. The
-- entries stay pending under the slot's consumer (the heartbeat moves long
-- runners to the worker's). A blocked group read wakes only the reader it
-- serves, so an entry added to an idle cluster wakes one worker, not every
-- idle one.
-- Returns {'idle'} when the read brought nothing, {} when the group is
-- missing, else as `claim`.
local ok, r = pcall(redis.call, 'XREADGROUP', 'GROUP', ARGV[1], ARGV[8],
  'COUNT', 16, 'STREAMS', KEYS[1], ARGV[9])
if not ok then return {} end
local got = r and r[1] and r[1][2]
local es = {}
for i = 1, #(got or {}) do
  -- A deleted entry comes back without fields.
  if got[i][2] then es[#es + 1] = got[i] end
end
-- Tidy the default lane here (finishes pipelined before the read leave it
-- to us): exactly when going idle, by whole nodes while busy.
if not es[1] then
  tidy(KEYS[1], ARGV[1], true)
  return {'idle'}
end
tidy(KEYS[1], ARGV[1], false)
return start_entries(KEYS, ARGV, es)
