-- KEYS: ready:1..4, delayed, leased, prio, fence, lease_token, trace (order fixed by redis_scheduler.py)
-- ARGV: now_ms, limit, deadline_ms, aged_before_ms, legacy_max, with_trace (1 or 0)
-- Preceded by legacy_delayed.lua.
-- Returns a flat array: id, priority, token, deadline_ms (and, with_trace, its trace context or
-- '') for each claimed item.
-- Times arrive as decimal strings and are handed back to Redis untouched, so no large number is
-- ever formatted by Lua (whose tostring keeps only 14 significant digits).
local now = ARGV[1]
local limit = tonumber(ARGV[2])
local deadline = ARGV[3]
local aged_before = ARGV[4]
local legacy_max = tonumber(ARGV[5])
local with_trace = ARGV[6] == '1'

drain_legacy_delayed(legacy_max)

local taken = {}
if limit > 0 then
  -- Starvation guard: anything that has waited longer than the threshold goes first, oldest
  -- first across priorities, so LOW keeps moving under sustained HIGH load.
  local aged = {}
  for p = 1, 4 do
    local r = redis.call('ZRANGEBYSCORE', KEYS[p], '-inf', '(' .. aged_before,
      'WITHSCORES', 'LIMIT', 0, limit)
    for i = 1, #r, 2 do
      aged[#aged + 1] = { r[i], p, tonumber(r[i + 1]) }
    end
  end
  table.sort(aged, function(a, b)
    if a[3] ~= b[3] then return a[3] < b[3] end
    if a[2] ~= b[2] then return a[2] > b[2] end
    return a[1] < b[1]
  end)
  for i = 1, math.min(limit, #aged) do
    redis.call('ZREM', KEYS[aged[i][2]], aged[i][1])
    taken[#taken + 1] = { aged[i][1], aged[i][2] }
  end

  -- A set's members scored up to now are due; the rest are scheduled for later. Ranged
  -- from -inf, the due ones found are the set's first members: removing by rank removes
  -- exactly them.
  for p = 4, 1, -1 do
    local room = limit - #taken
    if room <= 0 then break end
    local r = redis.call('ZRANGEBYSCORE', KEYS[p], '-inf', now, 'LIMIT', 0, room)
    if #r > 0 then
      redis.call('ZREMRANGEBYRANK', KEYS[p], 0, #r - 1)
      for i = 1, #r do
        taken[#taken + 1] = { r[i], p }
      end
    end
  end
end

local out = {}
for i = 1, #taken do
  local id, p = taken[i][1], taken[i][2]
  local token = redis.call('INCR', KEYS[8])
  redis.call('ZADD', KEYS[6], deadline, id)
  redis.call('HSET', KEYS[9], id, token)
  out[#out + 1] = id
  out[#out + 1] = p
  out[#out + 1] = token
  out[#out + 1] = deadline
  if with_trace then
    out[#out + 1] = redis.call('HGET', KEYS[10], id) or ''
  end
end
return out
