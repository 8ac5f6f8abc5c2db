-- KEYS: ready:1..4, delayed, leased, prio, fence, lease_token, trace (order fixed by redis_scheduler.py)
-- ARGV: id, token
-- A token mismatch means the lease expired and was recovered (and maybe re-claimed): the caller
-- no longer owns the item and must not touch the new holder's lease.
if redis.call('HGET', KEYS[9], ARGV[1]) ~= ARGV[2] then
  return 0
end
redis.call('ZREM', KEYS[6], ARGV[1])
redis.call('HDEL', KEYS[9], ARGV[1])
redis.call('HDEL', KEYS[7], ARGV[1])
-- Even when this process does not trace: the one that enqueued it may have.
redis.call('HDEL', KEYS[10], ARGV[1])
return 1
