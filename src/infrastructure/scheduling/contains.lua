-- KEYS: ready:1..4, delayed, leased, prio, fence, lease_token, trace (order fixed by redis_scheduler.py)
-- ARGV: id...
-- Returns one 0/1 per id. Atomic so an item moving between sets (claim, recovery) is never
-- reported missing mid-move.
local found = {}
for i = 1, #ARGV do
  found[i] = 0
  for k = 1, 6 do
    if redis.call('ZSCORE', KEYS[k], ARGV[i]) then
      found[i] = 1
      break
    end
  end
end
return found
