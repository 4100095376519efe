//! The Lua scripts behind the Redis broker: each is one atomic step, so
//! replicas never interleave inside a publish, a read or a presence change.
//! Times come from the Redis server (`TIME`), so replicas with skewed
//! clocks agree on expiry.

/// KEYS: meta hash, log stream. ARGV: epoch for a new history, history
/// size, TTL (ms), stored message, channel, publish time (µs).
pub(super) const PUBLISH: &str = r"
local epoch = redis.call('HGET', KEYS[1], 'e')
if not epoch then
  epoch = ARGV[1]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'e', epoch, 't', 0)
end
local top = redis.call('HINCRBY', KEYS[1], 't', 1)
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[2], '0-' .. top, 'm', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call('PUBLISH', ARGV[5], 'm ' .. top .. ' ' .. epoch .. ' ' .. ARGV[6] .. ' ' .. ARGV[4])
return {top, epoch}
";

/// KEYS: meta hash, log stream. ARGV: epoch for a new history, TTL (ms),
/// then a mode: `after <offset> <epoch> <limit>` returns the entries after
/// the offset when they can all still be there (same epoch, gap within the
/// limit), `last <count>` the newest `count`, newest first, and `none`
/// nothing. Returns {epoch, top, entries}.
pub(super) const READ: &str = r"
local epoch = redis.call('HGET', KEYS[1], 'e')
if not epoch then
  epoch = ARGV[1]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'e', epoch, 't', 0)
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
local top = tonumber(redis.call('HGET', KEYS[1], 't'))
local entries = {}
if ARGV[3] == 'after' then
  local since = tonumber(ARGV[4])
  if ARGV[5] == epoch and since <= top and top - since <= tonumber(ARGV[6]) then
    entries = redis.call('XRANGE', KEYS[2], '0-' .. (since + 1), '+')
  end
elseif ARGV[3] == 'last' then
  entries = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', ARGV[4])
end
return {epoch, top, entries}
";

/// KEYS: the room's member set, the user's replica set. ARGV: member,
/// replica, TTL (ms). Returns 1 when the user was in the room on no
/// replica before.
pub(super) const PRESENT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local expires = now + tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local before = redis.call('ZCARD', KEYS[2])
redis.call('ZADD', KEYS[2], expires, ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call('ZADD', KEYS[1], 'GT', expires, ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
if before == 0 then return 1 else return 0 end
";

/// KEYS: the room's member set, the user's replica set. ARGV: member,
/// replica. Returns 1 when the user is now in the room on no replica.
pub(super) const ABSENT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREM', KEYS[2], ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if redis.call('ZCARD', KEYS[2]) == 0 then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return 1
end
return 0
";

/// KEYS: the room's member set. Returns the members not yet expired.
pub(super) const MEMBERS: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZRANGE', KEYS[1], 0, -1)
";

/// KEYS: the room's member set. Returns how many are not yet expired.
pub(super) const COUNT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf')
";

/// A frame for the room's members, published from the node that holds the
/// room's keys (KEYS[1] names one of them): on a Redis Cluster, that is
/// where the room's messages are published too, so frames and messages
/// reach subscribers in the order they were sent.
pub(super) const BROADCAST: &str = r"
return redis.call('PUBLISH', ARGV[1], ARGV[2])
";
