-- KEYS: the default lane's stream. ARGV: as for `claim` (group, worker,
-- key tag, delivery token, cached liveness value, its client, how many),
-- then the slot's own consumer name.
-- Runs right after an idle slot's blocking `XREADGROUP` as its own consumer
-- (in the same pipeline): moves what that read delivered (the pending
-- entries of the slot's consumer) to the worker's consumer and starts
-- their tasks, as `claim` does. A blocked group read wakes only the reader
-- it serves, so an entry added to an idle cluster wakes one worker, not
-- every idle one.
-- Returns {'idle'} when the read brought nothing, {} when the group is
-- missing, else as `claim`.
local ok, p = pcall(redis.call, 'XPENDING', KEYS[1], ARGV[1], '-', '+', 16, ARGV[8])
if not ok then return {} end
if not p[1] then return {'idle'} end
local ids = {}
for i = 1, #p do ids[i] = p[i][1] end
local claimed = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, unpack(ids))
local es = {}
for i = 1, #claimed do
  -- A deleted entry comes back empty.
  if claimed[i] and claimed[i][2] then es[#es + 1] = claimed[i] end
end
if not es[1] then return {'idle'} end
return start_entries(KEYS, ARGV, es)
