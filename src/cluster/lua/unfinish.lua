-- After plain finishes (see `plain.rs`) whose replies were lost: a task's
-- bit must not say "finished" when its "done" event could not be added
-- (its client's event stream was gone), or the client's probe would wait
-- for that event forever instead of sending the task again.
-- KEYS: per task, its client's event stream and finished-bitmap.
-- ARGV: per task, its bit.
-- Clears the bits of tasks whose client's event stream is gone.
for i = 1, #KEYS, 2 do
  if redis.call('EXISTS', KEYS[i]) == 0 then
    redis.call('SETBIT', KEYS[i + 1], ARGV[(i + 1) / 2], 0)
  end
end
return 1
