-- KEYS: ready:1..4, delayed, leased, prio, fence, lease_token, trace (order fixed by redis_scheduler.py)
-- ARGV: id, token, id, token, ...
-- For each pair in turn (so a repeated id behaves as two acks one after the other): a token
-- mismatch means the lease expired and was recovered (and maybe re-claimed), so the caller no
-- longer owns the item and must not touch the new holder's lease. Acks made together arrive
-- in one call. Returns one 1/0 per pair.
local out = {}
for i = 1, #ARGV, 2 do
  local id = ARGV[i]
  if redis.call('HGET', KEYS[9], id) ~= ARGV[i + 1] then
    out[#out + 1] = 0
  else
    redis.call('ZREM', KEYS[6], id)
    redis.call('HDEL', KEYS[9], id)
    redis.call('HDEL', KEYS[7], id)
    -- Even when this process does not trace: the one that enqueued it may have.
    redis.call('HDEL', KEYS[10], id)
    out[#out + 1] = 1
  end
end
return out
