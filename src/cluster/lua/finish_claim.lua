-- KEYS: as for `finish` (the first is the default lane's stream, which the
-- claim reads). ARGV: the 8 arguments of `finish`, then the 6 of `claim`.
-- A busy worker's one script call per task: finishes the task it ran and
-- claims (and starts) the next; the claim tidies the stream (the finished
-- entry included). Returns what `claim` returns.
local f, c = {}, {}
for i = 1, 8 do f[i] = ARGV[i] end
for i = 9, #ARGV do c[i - 8] = ARGV[i] end
finish(KEYS, f, true)
return claim(KEYS, c, f[1])
