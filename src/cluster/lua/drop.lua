-- KEYS: queue, task. ARGV: entry id, group.
-- Drops a task whose client is gone (its liveness key expired or does not
-- verify): acknowledges and deletes the entry and deletes the record, so a
-- dead client's queued work does not stay in Redis.
redis.call('XACK', KEYS[1], ARGV[2], ARGV[1])
redis.call('XDEL', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2])
return 1
