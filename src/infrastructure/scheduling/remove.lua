-- KEYS: ready:1..4, delayed, leased, prio, fence, lease_token (order fixed by redis_scheduler.py)
-- ARGV: id
local id = ARGV[1]
local removed = 0
for p = 1, 5 do
  removed = removed + redis.call('ZREM', KEYS[p], id)
end
-- A leased item still needs its priority should its holder retry it or its lease expire.
if not redis.call('ZSCORE', KEYS[6], id) then
  redis.call('HDEL', KEYS[7], id)
end
return removed
