-- KEYS: the role's key
-- ARGV: holder, term_ms
-- Returns 2 when the role was free and is taken, 1 when the holder kept it, 0 when refused.
local current = redis.call('GET', KEYS[1])
if current == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if current then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 2
