for i = 2, #KEYS do redis.call('DEL', KEYS[i]) end
if ARGV[1] then redis.call('XTRIM', KEYS[1], 'MINID', '~', ARGV[1]) end
return 1
