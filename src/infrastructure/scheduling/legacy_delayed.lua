-- Included at the top of claim.lua (redis_scheduler.py joins them).
-- KEYS: ready:1..4, delayed, leased, prio, ... (order fixed by redis_scheduler.py)
--
-- Before the ready sets held scheduled items too, these waited in a separate delayed set and
-- were moved over once due. Items left there by that layout (or by a process of that version
-- during a rolling upgrade) are moved to their priority's set with their due time as score,
-- due or not, a bounded number per claim; once the set is gone this costs one lookup.

-- Arguments per Redis command: Lua's unpack() fails beyond a few thousand values.
local LEGACY_CHUNK = 1000

-- A missing or corrupt priority must not lose the item: Postgres holds the truth and the
-- status compare-and-set protects delivery, so serving it as LOW is the safe degradation.
local function drain_legacy_delayed(max)
  local waiting = redis.call('ZRANGE', KEYS[5], 0, max - 1, 'WITHSCORES')
  local count = #waiting / 2
  if count == 0 then
    return 0
  end
  redis.call('ZREMRANGEBYRANK', KEYS[5], 0, count - 1)
  local by_priority = { {}, {}, {}, {} }
  for first = 1, count, LEGACY_CHUNK do
    local last = math.min(first + LEGACY_CHUNK - 1, count)
    local ids = {}
    for i = first, last do
      ids[#ids + 1] = waiting[2 * i - 1]
    end
    local priorities = redis.call('HMGET', KEYS[7], unpack(ids))
    for k = 1, #ids do
      local p = tonumber(priorities[k])
      if p == nil or p < 1 or p > 4 then
        p = 1
      end
      local adds = by_priority[p]
      adds[#adds + 1] = waiting[2 * (first + k - 1)]
      adds[#adds + 1] = ids[k]
    end
  end
  for p = 1, 4 do
    local adds = by_priority[p]
    for first = 1, #adds, 2 * LEGACY_CHUNK do
      redis.call('ZADD', KEYS[p], unpack(adds, first, math.min(first + 2 * LEGACY_CHUNK - 1, #adds)))
    end
  end
  return count
end
