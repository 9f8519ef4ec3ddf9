-- KEYS: lane streams, best first. ARGV: group, consumer.
-- Reads at most one new entry: from the first lane that has one. Returns
-- {lane index (1-based), entry id, task id} or an empty table.
for i = 1, #KEYS do
  local ok, reply = pcall(redis.call, 'XREADGROUP', 'GROUP', ARGV[1], ARGV[2],
    'COUNT', 1, 'STREAMS', KEYS[i], '>')
  if ok and reply and reply[1] then
    local entries = reply[1][2]
    if entries and entries[1] then
      local id = entries[1][1]
      local fields = entries[1][2]
      local task = ''
      for j = 1, #fields, 2 do
        if fields[j] == 't' then task = fields[j + 1] end
      end
      return {tostring(i), id, task}
    end
  end
end
return {}
