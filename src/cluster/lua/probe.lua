-- KEYS: the client's finished bitmap, then pairs of (task, result) keys.
-- ARGV: per pair, the task's bit in the bitmap (-1: none).
-- Returns per pair 1 if either key exists or the task's bit is set (it
-- finished: its result may be on its way in an event, with no key).
local out = {}
for i = 2, #KEYS, 2 do
  local n = redis.call('EXISTS', KEYS[i])
  if n == 0 and KEYS[i + 1] then n = redis.call('EXISTS', KEYS[i + 1]) end
  local bit = tonumber(ARGV[i / 2]) or -1
  if n == 0 and bit >= 0 then n = redis.call('GETBIT', KEYS[1], bit) end
  out[#out + 1] = n
end
return out
