//! Every limit on tamga's files, named in one place. A file over a limit is refused with
//! an error naming the limit; nothing here is a tuning knob (those live in `node.toml`).

use tamga_protocol::limits as wire;

/// Largest configuration file read, in bytes.
pub const MAX_FILE_BYTES: usize = 1024 * 1024;
/// Most members in a roster: every member must fit in one projection's audience.
pub const MAX_MEMBERS: usize = wire::MAX_AUDIENCE;
/// Most PeerIds one member may list (a node and its standby, or a key rotation).
pub const MAX_PEER_IDS_PER_MEMBER: usize = 8;
/// Most addresses one member may list.
pub const MAX_ADDRS_PER_MEMBER: usize = 16;
/// Longest member name, agreement title, category title or policy note, in characters.
pub const MAX_NAME_CHARS: usize = 256;
/// Longest multiaddr, in bytes.
pub const MAX_ADDR_LEN: usize = 256;
/// Most categories in a catalog.
pub const MAX_CATEGORIES: usize = 256;
/// Most fields in one category: a record may not have more.
pub const MAX_FIELDS_PER_CATEGORY: usize = wire::MAX_FIELDS;
/// Most tags on one field.
pub const MAX_TAGS_PER_FIELD: usize = 16;
/// Most allowed values of one `enum` field.
pub const MAX_ENUM_VALUES: usize = 256;
/// Most items in one `text_list` value.
pub const MAX_LIST_ITEMS: usize = 256;
/// Most significant digits in a `decimal` value.
pub const MAX_DECIMAL_DIGITS: usize = 38;
/// Largest `max_len` a field may declare, in characters: no value may exceed the
/// protocol's per-value byte limit anyway.
pub const MAX_FIELD_LEN: usize = wire::MAX_VALUE_BYTES;
/// Most agreement files in force at once: every agreement digest fits in a hello.
pub const MAX_AGREEMENTS: usize = wire::MAX_AGREEMENTS;
/// Most parties to one agreement.
pub const MAX_PARTIES: usize = MAX_MEMBERS;
/// Longest retention an agreement may set, in days (a hundred years).
pub const MAX_RETENTION_DAYS: u32 = 36_500;
/// Most `[[share]]` plus `[[accept]]` rules in one policy.
pub const MAX_RULES: usize = 1024;
/// Most listen addresses of a node.
pub const MAX_LISTEN_ADDRS: usize = 16;
/// Highest `max_connections` setting.
pub const MAX_CONNECTIONS_LIMIT: u32 = 4096;
/// Smallest `api.max_body_bytes` setting.
pub const MIN_BODY_BYTES: usize = 1024;
/// Largest `api.max_body_bytes` setting.
pub const MAX_BODY_BYTES_LIMIT: usize = 64 * 1024 * 1024;
/// Smallest `store.cache_mb` setting, in MiB.
pub const MIN_CACHE_MB: u64 = 4;
/// Largest `store.cache_mb` setting, in MiB (64 GiB).
pub const MAX_CACHE_MB: u64 = 64 * 1024;
/// Longest interval setting (backoff, anti-entropy, checkpoint), in seconds: one day.
pub const MAX_INTERVAL_SECS: u64 = 24 * 60 * 60;
/// Most failed pings in a row `network.ping_max_failures` may ask for.
pub const MAX_PING_FAILURES: u32 = 100;
/// Milliseconds in a day, for agreement dates and retention.
pub const MS_PER_DAY: i64 = 24 * 60 * 60 * 1000;
/// Highest `limits.messages_per_sec` setting.
pub const MAX_MESSAGES_PER_SEC_LIMIT: u64 = 1_000_000;
/// Smallest `limits.bytes_per_sec` setting: one small frame per second must get through.
pub const MIN_BYTES_PER_SEC: u64 = 64 * 1024;
/// Highest `limits.bytes_per_sec` setting (1 GiB/s).
pub const MAX_BYTES_PER_SEC_LIMIT: u64 = 1024 * 1024 * 1024;
/// Highest `limits.open_streams` setting: one peer's two connections at their stream limit.
pub const MAX_OPEN_STREAMS_LIMIT: u64 = 128;
/// Least `limits.pending_pulls`: an honest node catching up keeps two pulls on the wire to
/// the peer it pulls from, and a lower limit would refuse the second as abuse.
pub const MIN_PENDING_PULLS: u64 = 2;
/// Longest `limits.stream_read_secs` setting: the time a sender waits for a whole
/// exchange (the node's request timeout); a request read more slowly has failed anyway.
pub const MAX_STREAM_READ_SECS: u64 = 30;
