-- KEYS: queue (the tasks' lane), client liveness, client events, lane
-- registry, task keys. ARGV: max deliveries, the client's current liveness
-- value, its TTL (ms), the lane's registry entry (empty for the default
-- lane), the consumer group, '1' when no record of these tasks can exist
-- yet (the client's first attempt at sending them) else '0', '1' when
-- the tasks may be quick (see below) else '0', then per task: id,
-- trampoline, build id, args, signature, item count, nonce, run-time limit
-- in ms (0: none).
-- Quick: on a first attempt, with the fifth ARGV '1' (the default lane),
-- a task whose arguments are at most 8 KiB carries its call in its entry
-- too (`q` = '1' and the record's call fields), and its record gets
-- `q` = '1'. A worker that reads such an entry with a blocking group read
-- runs it from the entry, marking the start at the same time (`mark.lua`)
-- instead of first starting it with a script; `cancel.lua` keeps that
-- safe by never cancelling a quick entry once the group delivered it.
-- Another lane than the default is registered (and its group created).
-- Idempotent: a task whose record exists is not added again (a retried
-- submit after a lost reply: the client sends '0' for any attempt after
-- the first, and only a first attempt skips the check). The record
-- remembers its stream entry (`e`).
-- A server that lost the client's liveness key or event stream (restarted
-- without persistence) gets them back here, before any worker can see the
-- new tasks and take the client for gone (one EXISTS for both when both
-- are there).
if redis.call('EXISTS', KEYS[2], KEYS[3]) < 2 then
  if redis.call('EXISTS', KEYS[2]) == 0 then
    redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
  end
  if redis.call('EXISTS', KEYS[3]) == 0 then
    redis.call('XADD', KEYS[3], 'MAXLEN', '0', '*', 'k', 'i')
    redis.call('PEXPIRE', KEYS[3], ARGV[3])
  end
end
if ARGV[4] ~= '' then
  redis.call('HSET', KEYS[4], KEYS[1], ARGV[4])
  redis.pcall('XGROUP', 'CREATE', KEYS[1], ARGV[5], '0', 'MKSTREAM')
end
local fresh = ARGV[6] == '1'
local may_quick = fresh and ARGV[7] == '1'
local per = 8
local added = 0
for i = 5, #KEYS do
  local o = 7 + (i - 5) * per
  if fresh or redis.call('EXISTS', KEYS[i]) == 0 then
    local quick = may_quick and #ARGV[o + 4] <= 8192
    local entry
    if quick then
      entry = redis.call('XADD', KEYS[1], '*', 't', ARGV[o + 1], 'q', '1',
        'f', ARGV[o + 2], 'b', ARGV[o + 3], 'a', ARGV[o + 4], 's', ARGV[o + 5],
        'n', ARGV[o + 6], 'nc', ARGV[o + 7], 'tl', ARGV[o + 8])
    else
      entry = redis.call('XADD', KEYS[1], '*', 't', ARGV[o + 1])
    end
    redis.call('HSET', KEYS[i], 'f', ARGV[o + 2], 'b', ARGV[o + 3], 'a', ARGV[o + 4],
      's', ARGV[o + 5], 'n', ARGV[o + 6], 'nc', ARGV[o + 7], 'm', ARGV[1], 'st', 'p',
      'at', '0', 'e', entry, 'tl', ARGV[o + 8], 'q', quick and '1' or '0')
    added = added + 1
  end
end
return added
