-- capbench — the token-bucket rate limiter: the one script the reference service, the benches and
-- the tests all load (src/ratelimit.rs, include_str!).
--
-- KEYS[1]  the bucket: rl:{user_id}:{read|write}
-- ARGV[1]  capacity: tokens a full bucket holds (a per-minute limit L gives capacity L)
-- ARGV[2]  refill rate in tokens per second (L / 60)
-- ARGV[3]  cost of this request in tokens (optional, default 1)
--
-- Returns {allowed (1 or 0), remaining whole tokens, retry_after_ms (0 when allowed)}.
--
-- Time comes from Redis (TIME), so several application servers share one clock. The state is one
-- hash (tokens, last_refill); the key expires once the bucket would be full again, so idle users cost
-- nothing. A script runs atomically: concurrent requests cannot both take the last token.

local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local cost = tonumber(ARGV[3] or "1")
if capacity == nil or rate == nil or cost == nil or capacity <= 0 or rate <= 0 or cost <= 0 then
    return redis.error_reply("token_bucket: capacity, rate and cost must be positive numbers")
end

local clock = redis.call("TIME")
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000

local state = redis.call("HMGET", KEYS[1], "tokens", "last_refill")
local tokens = tonumber(state[1])
local last_refill = tonumber(state[2])
if tokens == nil or last_refill == nil then
    tokens = capacity -- a new (or expired) bucket starts full
    last_refill = now
end

-- Refill in proportion to the time elapsed, never beyond capacity.
local elapsed = math.max(0, now - last_refill)
tokens = math.min(capacity, tokens + elapsed * rate)

local allowed = 0
local retry_after_ms = 0
if tokens >= cost then
    tokens = tokens - cost
    allowed = 1
else
    retry_after_ms = math.ceil((cost - tokens) / rate * 1000)
end

redis.call("HSET", KEYS[1], "tokens", tostring(tokens), "last_refill", tostring(now))
-- Expire once a full refill has surely happened (at least 1 s): an absent key reads as a full bucket.
redis.call("EXPIRE", KEYS[1], math.max(1, math.ceil(capacity / rate) + 1))

return {allowed, math.floor(tokens), retry_after_ms}
