-- KEYS: ready:1..4, delayed, leased, prio, fence, lease_token, trace (order fixed by redis_scheduler.py)
-- ARGV: now_ms, limit
local now = ARGV[1]
local expired = redis.call('ZRANGEBYSCORE', KEYS[6], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
for i = 1, #expired do
  local id = expired[i]
  redis.call('ZREM', KEYS[6], id)
  -- Clearing the token is what fences out the old holder: its ack/retry/extend now fail.
  redis.call('HDEL', KEYS[9], id)
  local p = tonumber(redis.call('HGET', KEYS[7], id))
  if p == nil or p < 1 or p > 4 then
    p = 1
  end
  -- Score now, not the original due time: served promptly, but behind items already waiting,
  -- and not instantly "aged" past fresher work by the starvation guard.
  redis.call('ZADD', KEYS[p], now, id)
end
return #expired
