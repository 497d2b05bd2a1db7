//! The Lua scripts the Redis backend runs: each read-then-write is one
//! script, atomic on the server. Times are Redis's own clock in
//! milliseconds, so the instances' clocks need not agree.

/// `now` in milliseconds from Redis's clock.
macro_rules! now {
    () => {
        "local t = redis.call('TIME')
         local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
        "
    };
}

/// Compare-and-set of a mailbox's memory. KEYS[1] the record; ARGV[1] the
/// new bytes; ARGV[2] the SHA-1 (hex) of the record the caller read, or ""
/// when it read none. 1 when written, 0 when the record is no longer what
/// the caller read (another instance wrote it meanwhile).
pub const SAVE: &str = "
local cur = redis.call('GET', KEYS[1])
if ARGV[2] == '' then
  if cur then return 0 end
elseif (not cur) or redis.sha1hex(cur) ~= ARGV[2] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1])
return 1
";

/// Takes or renews a session lease. KEYS[1] the user's sorted set of tokens
/// scored by expiry; ARGV[1] the token, ARGV[2] the most live leases (0 for
/// any number), ARGV[3] the lease in ms. A token already held is renewed
/// whatever the count; a new one only below the maximum. 1 held, 0 full.
pub const LEASE: &str = concat!(
    now!(),
    "
local ttl = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local max = tonumber(ARGV[2])
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  if max > 0 and redis.call('ZCARD', KEYS[1]) >= max then return 0 end
end
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('PEXPIRE', KEYS[1], ttl)
return 1
"
);

/// The penalty's arithmetic, as `gateway::limits::Penalty` does it in
/// memory: a hash per key with the failure count `c`, the last failure `l`
/// and when the next attempt may be checked `n`. ARGV[1] the longest wait,
/// ARGV[2] after how long failures are forgotten, ARGV[3] the queue length.
macro_rules! penalty {
    () => {
        "local max, window, queue = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local function step(c)
  if c == 0 then return 0 end
  return math.min(1000 * 2 ^ math.min(c - 1, 16), max)
end
local function expired(l, n) return now > n and now - l > window end
"
    };
}

/// Queues a login attempt. KEYS[1] the network's failures, KEYS[2] the
/// user's, KEYS[3] whether the user logged in from this network recently.
/// Returns {wait ms, 1 if the user's failures set it, 1 if the network is
/// known}, or {-1, 0, 0} when too many attempts are queued.
pub const ADMIT: &str = concat!(
    now!(),
    penalty!(),
    "
local function reserve(k)
  local f = redis.call('HMGET', k, 'c', 'l', 'n')
  if not f[1] then return 0 end
  local c, l, n = tonumber(f[1]), tonumber(f[2]), tonumber(f[3])
  if expired(l, n) then return 0 end
  local s = step(c)
  local start = math.max(n, now)
  local wait = start - now
  if wait > s * queue then return -1 end
  redis.call('HSET', k, 'n', start + s)
  redis.call('PEXPIRE', k, start + s - now + window)
  return wait
end
local by_network = reserve(KEYS[1])
if by_network < 0 then return {-1, 0, 0} end
local known = redis.call('EXISTS', KEYS[3])
local by_user = 0
if known == 0 then
  by_user = reserve(KEYS[2])
  if by_user < 0 then return {-1, 0, 0} end
end
if by_network >= by_user then return {by_network, 0, known} end
return {by_user, 1, known}
"
);

/// Books a failed login on KEYS[1] (network) and KEYS[2] (user).
pub const FAILED: &str = concat!(
    now!(),
    penalty!(),
    "
for _, k in ipairs(KEYS) do
  local f = redis.call('HMGET', k, 'c', 'l', 'n')
  local c, l, n = 0, now, now
  if f[1] then c, l, n = tonumber(f[1]), tonumber(f[2]), tonumber(f[3]) end
  if expired(l, n) then c = 0 end
  c = c + 1
  n = math.max(n, now + step(c))
  redis.call('HSET', k, 'c', c, 'l', now, 'n', n)
  redis.call('PEXPIRE', k, n - now + window)
end
return 1
"
);
