-- KEYS: ready:1..4, delayed, leased, prio, fence, lease_token, trace (order fixed by redis_scheduler.py)
-- ARGV: now_ms, max
-- Preceded by promote_due.lua. Returns how many items moved from delayed to ready.
return promote_due(ARGV[1], tonumber(ARGV[2]))
