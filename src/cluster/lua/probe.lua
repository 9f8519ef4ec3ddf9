-- KEYS: the client's finished bitmap, then pairs of (task, result) keys.
-- ARGV: per pair, the task's bit in the bitmap (-1: none).
-- Returns per pair 1 if either key exists (the task is pending, running, or
-- its result waits in Redis), 2 if neither does but the task's bit is set
-- (it finished: its result is in an event, which the client may have read
-- past; see `probe` in client/events.rs), 0 if none of them (it vanished).
local out = {}
for i = 2, #KEYS, 2 do
  local n = redis.call('EXISTS', KEYS[i])
  if n == 0 and KEYS[i + 1] then n = redis.call('EXISTS', KEYS[i + 1]) end
  local bit = tonumber(ARGV[i / 2]) or -1
  if n == 0 and bit >= 0 and redis.call('GETBIT', KEYS[1], bit) == 1 then n = 2 end
  out[#out + 1] = n
end
return out
