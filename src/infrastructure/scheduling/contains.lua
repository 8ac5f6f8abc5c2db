-- KEYS: ready:1..4, delayed, leased, prio, fence, lease_token (order fixed by redis_scheduler.py)
-- ARGV: id
-- Atomic so an item moving between sets (claim, recovery) is never reported missing mid-move.
for k = 1, 6 do
  if redis.call('ZSCORE', KEYS[k], ARGV[1]) then
    return 1
  end
end
return 0
