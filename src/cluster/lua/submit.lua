-- KEYS: queue, client liveness, client events, task keys. ARGV: max
-- deliveries, the client's current liveness value, its TTL (ms), then per
-- task: id, trampoline, build id, args, signature, item count, nonce.
-- Idempotent: a task whose record exists is not added again (a retried
-- submit after a lost reply). The record remembers its stream entry (`e`).
-- A server that lost the client's liveness key or event stream (restarted
-- without persistence) gets them back here, before any worker can see the
-- new tasks and take the client for gone.
if redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
end
if redis.call('EXISTS', KEYS[3]) == 0 then
  redis.call('XADD', KEYS[3], 'MAXLEN', '0', '*', 'k', 'i')
  redis.call('PEXPIRE', KEYS[3], ARGV[3])
end
local per = 7
local added = 0
for i = 4, #KEYS do
  local o = 3 + (i - 4) * per
  if redis.call('EXISTS', KEYS[i]) == 0 then
    local entry = redis.call('XADD', KEYS[1], '*', 't', ARGV[o + 1])
    redis.call('HSET', KEYS[i], 'f', ARGV[o + 2], 'b', ARGV[o + 3], 'a', ARGV[o + 4],
      's', ARGV[o + 5], 'n', ARGV[o + 6], 'nc', ARGV[o + 7], 'm', ARGV[1], 'st', 'p',
      'at', '0', 'e', entry)
    added = added + 1
  end
end
return added
