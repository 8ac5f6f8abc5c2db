-- Included at the top of claim.lua and promote.lua (redis_scheduler.py joins them): one
-- definition of how due items leave the delayed set.
-- KEYS: ready:1..4, delayed, leased, prio, ... (order fixed by redis_scheduler.py)

-- Arguments per Redis command: Lua's unpack() fails beyond a few thousand values.
local PROMOTE_CHUNK = 1000

-- Moves up to `max` items of the delayed set due by `now` (a decimal string, handed to Redis
-- untouched) to their priority's ready set, and returns how many moved. The ready score stays
-- the due time, so an item promoted late still counts as having waited since it became due
-- (FIFO and the starvation guard both rely on that).
-- A missing or corrupt priority must not lose the item: Postgres holds the truth and the
-- status compare-and-set protects delivery, so serving it as LOW is the safe degradation.
local function promote_due(now, max)
  local due = redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', now, 'WITHSCORES', 'LIMIT', 0, max)
  local count = #due / 2
  if count == 0 then
    return 0
  end
  -- From -inf, those are the set's first `count` members in its own order: removing by rank
  -- removes exactly them, in one command instead of one per item.
  redis.call('ZREMRANGEBYRANK', KEYS[5], 0, count - 1)
  local by_priority = { {}, {}, {}, {} }
  for first = 1, count, PROMOTE_CHUNK do
    local last = math.min(first + PROMOTE_CHUNK - 1, count)
    local ids = {}
    for i = first, last do
      ids[#ids + 1] = due[2 * i - 1]
    end
    local priorities = redis.call('HMGET', KEYS[7], unpack(ids))
    for k = 1, #ids do
      local p = tonumber(priorities[k])
      if p == nil or p < 1 or p > 4 then
        p = 1
      end
      local adds = by_priority[p]
      adds[#adds + 1] = due[2 * (first + k - 1)]
      adds[#adds + 1] = ids[k]
    end
  end
  for p = 1, 4 do
    local adds = by_priority[p]
    for first = 1, #adds, 2 * PROMOTE_CHUNK do
      redis.call('ZADD', KEYS[p], unpack(adds, first, math.min(first + 2 * PROMOTE_CHUNK - 1, #adds)))
    end
  end
  return count
end
