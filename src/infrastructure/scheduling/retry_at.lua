-- KEYS: ready:1..4, delayed, leased, prio, fence, lease_token, trace (order fixed by redis_scheduler.py)
-- ARGV: id, token, due_ms, claimed_priority
local id = ARGV[1]
if redis.call('HGET', KEYS[9], id) ~= ARGV[2] then
  return 0
end
redis.call('ZREM', KEYS[6], id)
redis.call('HDEL', KEYS[9], id)
-- The stored priority wins; the claim's copy only covers a hash entry lost to tampering.
local p = tonumber(redis.call('HGET', KEYS[7], id))
if p == nil or p < 1 or p > 4 then
  p = tonumber(ARGV[4])
  redis.call('HSET', KEYS[7], id, p)
end
redis.call('ZADD', KEYS[p], ARGV[3], id)
return 1
