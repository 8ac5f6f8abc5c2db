-- KEYS: ready:1..4, delayed, leased, prio, fence, lease_token, trace (order fixed by redis_scheduler.py)
-- ARGV: now_ms
-- One script so the counts are a consistent snapshot (an item moving between sets is counted
-- once): per priority the members due by now, then everything scheduled later (with what
-- still waits in the earlier layout's delayed set), then the leased.
local now = ARGV[1]
local out = {}
local later = redis.call('ZCARD', KEYS[5])
for p = 1, 4 do
  out[p] = redis.call('ZCOUNT', KEYS[p], '-inf', now)
  later = later + redis.call('ZCOUNT', KEYS[p], '(' .. now, '+inf')
end
out[5] = later
out[6] = redis.call('ZCARD', KEYS[6])
return out
