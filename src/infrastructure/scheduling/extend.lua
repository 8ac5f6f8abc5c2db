-- KEYS: ready:1..4, delayed, leased, prio, fence, lease_token, trace (order fixed by redis_scheduler.py)
-- ARGV: id, token, deadline_ms
if redis.call('HGET', KEYS[9], ARGV[1]) ~= ARGV[2] then
  return 0
end
-- XX: a token without a lease entry would be a broken invariant; never resurrect a lease from it.
redis.call('ZADD', KEYS[6], 'XX', ARGV[3], ARGV[1])
return redis.call('ZSCORE', KEYS[6], ARGV[1]) and 1 or 0
