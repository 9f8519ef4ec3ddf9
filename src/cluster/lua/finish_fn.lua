-- KEYS: queue, task, result, client events, client finished-bitmap.
-- ARGV: entry id, group, signed envelope, result TTL (s), task id, task
-- sequence number (decimal; -1 when too large for the bitmap), envelope
-- size, `1` if the client should leave the result in Redis until asked (a
-- large value).
-- A small envelope (at most 4 KiB) rides in the "finished" event, so the
-- client needs no second read for it; then no result key is written when
-- the task has a bit in the bitmap (setting the bit, which was clear, is
-- what makes a second result impossible), else the result key is written
-- too (`SET NX` makes a second result impossible) and deleted by the
-- client's ack.
-- Marks the task finished in the client's bitmap (so a copy of its record
-- written again is never run); stores the result and tells the client only
-- if the record still exists (so a redelivered copy finishing second is
-- dropped) and the client is still there. `SET NX` makes a second result
-- for the same task impossible even if the record were written again. The
-- result lives no longer than the client's event stream will, plus the
-- result TTL's grace for a client that is merely slow.
-- Returns 1 if this call delivered.
-- The caller (`finish_claim`, for a batch) acknowledges the entry and
-- tidies the stream. `seen` remembers the event streams' TTLs the script
-- call has read and the bitmaps whose expiry it has set, so a batch of
-- finishes reads and sets each once.
local function finish(KEYS, ARGV, seen)
  local seq = tonumber(ARGV[6]) or -1
  local st = redis.call('HGET', KEYS[2], 'st')
  if (not st) or st == 'x' or st == 'c' then return 0 end
  redis.call('DEL', KEYS[2])
  -- The client's event stream tells whether it is still there, and how long
  -- its keys live.
  local ttl = seen[KEYS[4]]
  if not ttl then
    ttl = redis.call('PTTL', KEYS[4])
    seen[KEYS[4]] = ttl
  end
  if ttl == -2 then return 0 end
  if seq >= 0 then
    if redis.call('SETBIT', KEYS[5], seq, 1) == 1 then return 0 end
    if ttl > 0 and not seen[KEYS[5]] then
      redis.call('PEXPIRE', KEYS[5], ttl)
      seen[KEYS[5]] = true
    end
  end
  local size = tonumber(ARGV[7]) or 0
  local inline = ARGV[8] ~= '1' and size > 0 and size <= 4096
  if not (inline and seq >= 0) then
    local keep = tonumber(ARGV[4]) * 1000
    if ttl > 0 then keep = math.min(keep, 2 * ttl + 1000) end
    if not redis.call('SET', KEYS[3], ARGV[3], 'NX', 'PX', keep) then return 0 end
  end
  if inline then
    redis.call('XADD', KEYS[4], '*', 'k', 'd', 't', ARGV[5], 'z', ARGV[7], 'l', '0', 'v', ARGV[3])
  else
    redis.call('XADD', KEYS[4], '*', 'k', 'd', 't', ARGV[5], 'z', ARGV[7] or '0', 'l', ARGV[8] or '0')
  end
  return 1
end
