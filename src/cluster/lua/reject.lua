redis.call('XACK', KEYS[1], ARGV[2], ARGV[1])
tidy(KEYS[1], ARGV[2], true, ARGV[1])
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('HSET', KEYS[2], 'st', 'x', 'why', ARGV[6])
  redis.call('EXPIRE', KEYS[2], ARGV[4])
end
if redis.call('EXISTS', KEYS[4]) == 0 then return 0 end
if not redis.call('SET', KEYS[3], ARGV[3], 'NX', 'EX', ARGV[4]) then return 0 end
redis.call('XADD', KEYS[4], '*', 'k', 'd', 't', ARGV[5])
return 1
