local out = {}
for i = 1, #KEYS, 2 do
  local n = redis.call('EXISTS', KEYS[i])
  if n == 0 and KEYS[i + 1] then n = redis.call('EXISTS', KEYS[i + 1]) end
  out[#out + 1] = n
end
return out
