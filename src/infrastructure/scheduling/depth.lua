-- KEYS: ready:1..4, delayed, leased, prio, fence, lease_token, trace (order fixed by redis_scheduler.py)
-- One script so the counts are a consistent snapshot (an item moving between sets is counted once).
local out = {}
for k = 1, 6 do
  out[k] = redis.call('ZCARD', KEYS[k])
end
return out
