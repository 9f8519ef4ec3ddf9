local per = 6
local added = 0
for i = 2, #KEYS do
  local o = 1 + (i - 2) * per
  if redis.call('EXISTS', KEYS[i]) == 0 then
    local entry = redis.call('XADD', KEYS[1], '*', 't', ARGV[o + 1])
    redis.call('HSET', KEYS[i], 'f', ARGV[o + 2], 'b', ARGV[o + 3], 'a', ARGV[o + 4],
      's', ARGV[o + 5], 'n', ARGV[o + 6], 'm', ARGV[1], 'st', 'p', 'at', '0', 'e', entry)
    added = added + 1
  end
end
return added
