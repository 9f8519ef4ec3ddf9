-- KEYS: queue, task, client events, client liveness, client finished-bitmap.
-- ARGV: entry id, group, worker, delivery token, task id, task sequence
-- number (decimal; -1 when too large for the bitmap).
-- An entry other than the one `submit` added for the task (a replayed
-- entry) is dropped, and so is a task whose bit in the client's bitmap says
-- it already finished (a record written again after it finished).
-- Returns {'gone'}, {'cancelled'}, {'lost', owner, starts} or {'run',
-- trampoline, build, args, signature, items, cancelled indices, nonce,
-- liveness, server time in ms}. Retrying with the same delivery token does
-- not count a second delivery.
local function drop()
  redis.call('XACK', KEYS[1], ARGV[2], ARGV[1])
  redis.call('XDEL', KEYS[1], ARGV[1])
end
local seq = tonumber(ARGV[6]) or -1
if seq >= 0 and redis.call('GETBIT', KEYS[5], seq) == 1 then
  drop()
  redis.call('DEL', KEYS[2])
  return {'gone'}
end
local st = redis.call('HGET', KEYS[2], 'st')
local entry = redis.call('HGET', KEYS[2], 'e')
if (not st) or st == 'x' or (entry and entry ~= ARGV[1]) then
  -- finished, rejected, never existed, or a second entry naming the task
  drop()
  return {'gone'}
end
if st == 'c' then
  redis.call('DEL', KEYS[2])
  drop()
  return {'cancelled'}
end
local at = tonumber(redis.call('HGET', KEYS[2], 'at')) or 0
if redis.call('HGET', KEYS[2], 'd') ~= ARGV[4] then
  at = at + 1
  redis.call('HSET', KEYS[2], 'at', tostring(at))
end
local m = tonumber(redis.call('HGET', KEYS[2], 'm')) or 1
if at > m then
  return {'lost', redis.call('HGET', KEYS[2], 'o') or '', tostring(at - 1)}
end
redis.call('HSET', KEYS[2], 'st', 'r', 'o', ARGV[3], 'd', ARGV[4])
if at == 1 and redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('XADD', KEYS[3], '*', 'k', 's', 't', ARGV[5])
end
local r = redis.call('HMGET', KEYS[2], 'f', 'b', 'a', 's', 'n', 'x', 'nc')
local out = {'run'}
for i = 1, 5 do out[i + 1] = r[i] or '' end
local cancelled = {}
if (tonumber(r[6]) or 0) > 0 then
  for i = 0, (tonumber(r[5]) or 0) - 1 do
    if redis.call('HEXISTS', KEYS[2], 'x' .. i) == 1 then cancelled[#cancelled + 1] = tostring(i) end
  end
end
out[7] = table.concat(cancelled, ',')
out[8] = r[7] or ''
out[9] = redis.call('GET', KEYS[4]) or ''
local now = redis.call('TIME')
out[10] = tostring(tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000))
return out
