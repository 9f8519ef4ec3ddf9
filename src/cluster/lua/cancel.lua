local out = {}
for i = 1, #KEYS do
  local k = KEYS[i]
  local idx = ARGV[i + 1]
  local st = redis.call('HGET', k, 'st')
  if st == 'c' then
    out[i] = 2
  elseif st == 'p' then
    local whole = (idx == '-1')
    if not whole then
      if redis.call('HSETNX', k, 'x' .. idx, '1') == 1 then
        redis.call('HINCRBY', k, 'x', 1)
      end
      whole = (tonumber(redis.call('HGET', k, 'x')) or 0) >= (tonumber(redis.call('HGET', k, 'n')) or 1)
    end
    if whole then
      redis.call('HSET', k, 'st', 'c')
      redis.call('EXPIRE', k, ARGV[1])
      out[i] = 2
    else
      out[i] = 1
    end
  else
    out[i] = 0
  end
end
return out
