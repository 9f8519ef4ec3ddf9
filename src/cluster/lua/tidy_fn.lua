-- Removes the entries of a queue stream that every consumer is done with,
-- instead of an XDEL per finished entry: a stream keeps deleted entries in
-- their node (of up to 100 entries) until the whole node is deleted, and
-- every XDEL walks them, while a trim of whole nodes walks nothing.
-- Done means delivered (the group's reads only move forward) and no longer
-- pending; the oldest pending entry bounds the trim, so a running or
-- leased entry (and anything newer) stays for redelivery.
-- `exact` false: only whole nodes go (cheap; a busy worker's call per
-- task). `exact` true: every done entry goes (where a worker may go idle,
-- so an idle queue is left empty). `entry`, when given, is the entry just
-- acknowledged: while the oldest pending entry is more than a second older
-- (a long task holds the head), it is deleted on its own as before, so the
-- done entries behind a long task do not pile up. `newest`, when given,
-- is an entry the group has delivered (the stream's newest after a read
-- that found nothing new, or the entry just acknowledged): with nothing
-- pending, everything up to it is done.
local function tidy(stream, group, exact, entry, newest)
  local ok, p = pcall(redis.call, 'XPENDING', stream, group)
  if not ok then return end
  local oldest = p[2]
  if oldest then
    if entry then
      local a = tonumber(string.match(oldest, '^(%d+)-')) or 0
      local b = tonumber(string.match(entry, '^(%d+)-')) or 0
      if b - a > 1000 then
        redis.call('XDEL', stream, entry)
        return
      end
    end
    if exact then
      redis.call('XTRIM', stream, 'MINID', oldest)
    else
      redis.call('XTRIM', stream, 'MINID', '~', oldest)
    end
    return
  end
  if not exact then return end
  if newest then
    -- One trim below the id after `newest` takes it and all before it. A
    -- sequence number of more than 13 digits takes two calls: Lua would
    -- print one more than it in exponent form.
    local ms, seq = string.match(newest, '^(%d+)-(%d+)$')
    if ms and #seq <= 13 then
      redis.call('XTRIM', stream, 'MINID', ms .. '-' .. (tonumber(seq) + 1))
    else
      redis.call('XTRIM', stream, 'MINID', newest)
      redis.call('XDEL', stream, newest)
    end
    return
  end
  -- Nothing pending: every entry up to the group's last delivered one is done.
  local groups = redis.call('XINFO', 'GROUPS', stream)
  for i = 1, #groups do
    local g, name, last = groups[i], nil, nil
    for j = 1, #g, 2 do
      if g[j] == 'name' then name = g[j + 1] end
      if g[j] == 'last-delivered-id' then last = g[j + 1] end
    end
    if name == group and last and last ~= '0-0' then
      redis.call('XTRIM', stream, 'MINID', last)
      redis.call('XDEL', stream, last)
    end
  end
end
