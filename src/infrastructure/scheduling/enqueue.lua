-- KEYS: ready:1..4, delayed, leased, prio, fence, lease_token, trace (order fixed by redis_scheduler.py)
-- ARGV: one (id, priority, due_ms, trace_context) quadruple per item
for i = 1, #ARGV, 4 do
  local id, prio, due, trace = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  -- The holder of a lease will ack or retry the item itself; queueing it again would hand
  -- the same notification to a second worker while the first is still sending it.
  if not redis.call('ZSCORE', KEYS[6], id) then
    -- Priority may change on re-enqueue, so clear every set rather than trust the stored one.
    for p = 1, 4 do
      redis.call('ZREM', KEYS[p], id)
    end
    -- The delayed set of the earlier layout, in case the id still waits there.
    redis.call('ZREM', KEYS[5], id)
    redis.call('HSET', KEYS[7], id, prio)
    -- Empty (tracing off, or the reconciler re-enqueueing): keep the trace it already has.
    if trace ~= '' then
      redis.call('HSET', KEYS[10], id, trace)
    end
    -- Scored by due time, due or not: claims take the members scored up to their now.
    redis.call('ZADD', KEYS[tonumber(prio)], due, id)
  end
end
return 0
