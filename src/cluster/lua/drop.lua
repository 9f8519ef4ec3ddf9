-- KEYS: queue, task. ARGV: entry id, group.
-- Drops a task whose client is gone (its liveness key expired or does not
-- verify): acknowledges the entry (and tidies the stream, see
-- `tidy_fn.lua`) and deletes the record, so a dead client's queued work
-- does not stay in Redis.
redis.call('XACK', KEYS[1], ARGV[2], ARGV[1])
tidy(KEYS[1], ARGV[2], true, ARGV[1])
redis.call('DEL', KEYS[2])
return 1
