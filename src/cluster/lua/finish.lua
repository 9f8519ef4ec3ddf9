redis.call('XACK', KEYS[1], ARGV[2], ARGV[1])
redis.call('XDEL', KEYS[1], ARGV[1])
local st = redis.call('HGET', KEYS[2], 'st')
if (not st) or st == 'x' or st == 'c' then return 0 end
redis.call('DEL', KEYS[2])
if redis.call('EXISTS', KEYS[4]) == 0 then return 0 end
if not redis.call('SET', KEYS[3], ARGV[3], 'NX', 'EX', ARGV[4]) then return 0 end
redis.call('XADD', KEYS[4], '*', 'k', 'd', 't', ARGV[5])
return 1
