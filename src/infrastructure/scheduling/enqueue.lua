-- KEYS: ready:1..4, delayed, leased, prio, fence, lease_token, trace (order fixed by redis_scheduler.py)
-- ARGV: now_ms, then one (id, priority, due_ms, trace_context) quadruple per item
local now = tonumber(ARGV[1])
for i = 2, #ARGV, 4 do
  local id, prio, due, trace = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  -- The holder of a lease will ack or retry the item itself; queueing it again would hand
  -- the same notification to a second worker while the first is still sending it.
  if not redis.call('ZSCORE', KEYS[6], id) then
    -- Priority may change on re-enqueue, so clear every set rather than trust the stored one.
    for p = 1, 4 do
      redis.call('ZREM', KEYS[p], id)
    end
    redis.call('ZREM', KEYS[5], id)
    redis.call('HSET', KEYS[7], id, prio)
    -- Empty (tracing off, or the reconciler re-enqueueing): keep the trace it already has.
    if trace ~= '' then
      redis.call('HSET', KEYS[10], id, trace)
    end
    if tonumber(due) <= now then
      redis.call('ZADD', KEYS[tonumber(prio)], due, id)
    else
      redis.call('ZADD', KEYS[5], due, id)
    end
  end
end
return 0
