for i = 2, #KEYS do redis.call('DEL', KEYS[i]) end
if #ARGV > 0 then redis.call('XDEL', KEYS[1], unpack(ARGV)) end
return 1
