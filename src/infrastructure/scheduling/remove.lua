-- KEYS: ready:1..4, delayed, leased, prio, fence, lease_token, trace (order fixed by redis_scheduler.py)
-- ARGV: id
local id = ARGV[1]
local removed = 0
for p = 1, 5 do
  removed = removed + redis.call('ZREM', KEYS[p], id)
end
-- A leased item still needs its priority (and trace) should its holder retry it or its lease
-- expire; the holder's ack drops them.
if not redis.call('ZSCORE', KEYS[6], id) then
  redis.call('HDEL', KEYS[7], id)
  redis.call('HDEL', KEYS[10], id)
end
return removed
