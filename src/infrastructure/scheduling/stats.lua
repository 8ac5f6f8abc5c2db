-- KEYS: ready:1..4, delayed, leased, prio, ... (order fixed by redis_scheduler.py; only 1..7 used)
-- ARGV: now_ms, scan_limit
-- Read only. Returns a flat array: for each priority 1..4 its ready, delayed and leased counts
-- and the score (ms) of its longest-due item (-1 when nothing is due); then the delayed and the
-- leased items left unattributed because their set holds more than scan_limit.
-- A priority's set holds its due items (ready) and its scheduled ones (delayed) apart by score,
-- so those counts are exact. Leased items, and any still in the earlier layout's delayed set,
-- carry their priority only in the prio hash: attributing them costs one lookup each, bounded
-- by scan_limit per set. That delayed set is read earliest due first, so overdue items (the
-- ones that matter for the oldest age) come before any cut.
local now = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local CHUNK = 500

local function prio_of(id)
  local p = tonumber(redis.call('HGET', KEYS[7], id))
  if p == nil or p < 1 or p > 4 then
    return 1 -- what claim.lua serves such an item as
  end
  return p
end

local delayed = { 0, 0, 0, 0 }
local leased = { 0, 0, 0, 0 }
local oldest = {}
for p = 1, 4 do
  delayed[p] = redis.call('ZCOUNT', KEYS[p], '(' .. ARGV[1], '+inf')
  -- A score is the due time (or when a lost lease returned the item): the lowest one, if
  -- due, has been due the longest.
  local first = redis.call('ZRANGE', KEYS[p], 0, 0, 'WITHSCORES')
  if #first > 0 and tonumber(first[2]) <= now then
    oldest[p] = tonumber(first[2])
  end
end

-- Attributes up to `limit` members of set `key` to priorities; returns how many it left.
local function attribute(key, counts, track_due)
  local total = redis.call('ZCARD', key)
  local bound = math.min(total, limit)
  local start = 0
  while start < bound do
    local stop = math.min(start + CHUNK, bound) - 1
    local r = redis.call('ZRANGE', key, start, stop, 'WITHSCORES')
    for i = 1, #r, 2 do
      local p = prio_of(r[i])
      counts[p] = counts[p] + 1
      if track_due then
        local score = tonumber(r[i + 1])
        if score <= now and (oldest[p] == nil or score < oldest[p]) then
          oldest[p] = score
        end
      end
    end
    start = stop + 1
  end
  return total - bound
end

local unattributed_delayed = attribute(KEYS[5], delayed, true)
local unattributed_leased = attribute(KEYS[6], leased, false)

local out = {}
for p = 1, 4 do
  out[#out + 1] = redis.call('ZCOUNT', KEYS[p], '-inf', ARGV[1])
  out[#out + 1] = delayed[p]
  out[#out + 1] = leased[p]
  out[#out + 1] = oldest[p] or -1
end
out[#out + 1] = unattributed_delayed
out[#out + 1] = unattributed_leased
return out
