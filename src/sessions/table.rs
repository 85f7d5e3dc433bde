//! The in-memory session table: the read path for affinity.
//!
//! Called by `proxy` (look up, assign, touch while a tunnel is open), by
//! `cluster` (merge peers' records, snapshot for catch-up), by `control` and
//! the admin API (remove, counts) and by the sweeper. It never does I/O:
//! every method that changes a record returns it, and the caller enqueues it
//! to the store ([`super::StoreHandle`]) and to gossip.
//!
//! Records live in [`SHARDS`] `RwLock`ed shards chosen by a keyed hash of
//! (pool, key); a lookup takes one read lock for a few map probes and clones
//! an `Arc<str>`. Each shard also keeps, per pool, how many live records name
//! each server, updated with every change under the same lock, so
//! [`Table::counts_per_server`] sums a handful of small maps instead of
//! scanning records. Records that expired but are not swept yet still count
//! until [`Table::sweep`] runs.
//!
//! A record costs a 40-byte map slot (its boxed key, then a 24-byte
//! [`Entry`]), its key's bytes and its share of the map's spare slots:
//! server and origin are ids into the pool shard's interned [`names`] rather
//! than `Arc<str>`s (at a million records, about 80 MiB less).
//!
//! Times are Unix milliseconds passed in by the caller (see
//! [`super::unix_now_ms`]), which keeps every method pure and testable.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use super::record::{Hlc, HlcClock, SessionRecord, MAX_DRIFT_MS};

mod names;

use names::{NameId, Names};

/// Number of lock shards: enough that concurrent connects rarely meet on one
/// lock, few enough that summing counts stays cheap.
pub const SHARDS: usize = 16;
/// How long a removal is remembered by default: longer than gossip takes to
/// spread it and than a catch-up takes, so an older copy cannot revive it.
pub const DEFAULT_TOMBSTONE_TTL: Duration = Duration::from_secs(600);

/// The session table of one node.
#[derive(Debug)]
pub struct Table {
    /// This node's name: the origin of records written here.
    node: Arc<str>,
    clock: HlcClock,
    tombstone_ttl_ms: u64,
    /// Keyed (random per process) so clients cannot aim their keys at one shard.
    hasher: RandomState,
    shards: Box<[RwLock<Shard>]>,
}

#[derive(Debug, Default)]
struct Shard {
    pools: HashMap<String, PoolShard>,
}

#[derive(Debug, Default)]
struct PoolShard {
    records: HashMap<Box<str>, Entry>,
    /// The servers and origins `records` name, with live records per server.
    names: Names,
}

/// A record without its (pool, key), which the maps hold, and with its
/// names as ids into its [`PoolShard`]'s [`Names`], each held once by the
/// entry and released when it is replaced or swept.
#[derive(Debug)]
struct Entry {
    expires_at_ms: u64,
    version: Hlc,
    server: NameId,
    /// The origin's id in the low 31 bits, the tombstone flag in the top
    /// one: a `bool` of its own would pad the entry from 24 bytes to 32.
    origin_and_tombstone: u32,
}

const TOMBSTONE_BIT: u32 = NameId::LIMIT;

/// What [`Table::touch`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Touch {
    /// The expiry was pushed out; persist and gossip this record.
    Refreshed(SessionRecord),
    /// More than half the TTL remains: nothing to write. Callers may touch on
    /// every heartbeat without flooding the store and gossip.
    Fresh,
    /// The key now belongs to another server (a peer reassigned it).
    Moved(Arc<str>),
    /// No live record for the key.
    Missing,
}

/// What [`Table::claim`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The server the key belongs to now.
    pub server: Arc<str>,
    /// The record written, if the key had no live owner; persist and gossip it.
    pub written: Option<SessionRecord>,
}

impl Table {
    pub fn new(node: &str) -> Self {
        Table {
            node: Arc::from(node),
            clock: HlcClock::new(),
            tombstone_ttl_ms: DEFAULT_TOMBSTONE_TTL.as_millis() as u64,
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
        }
    }

    pub fn with_tombstone_ttl(mut self, ttl: Duration) -> Self {
        self.tombstone_ttl_ms = ttl.as_millis() as u64;
        self
    }

    /// This node's name, the origin of local writes.
    pub fn node(&self) -> &str {
        &self.node
    }

    pub fn clock(&self) -> &HlcClock {
        &self.clock
    }

    /// The server that `key` of `pool` is pinned to, if a live record says so.
    pub fn get(&self, pool: &str, key: &str, now_ms: u64) -> Option<Arc<str>> {
        let shard = self.read(pool, key);
        let ps = shard.pools.get(pool)?;
        let e = ps.records.get(key)?;
        e.is_live(now_ms).then(|| ps.names.text(e.server).clone())
    }

    /// The stored record for `key`, whatever its state (admin API).
    pub fn record(&self, pool: &str, key: &str) -> Option<SessionRecord> {
        let shard = self.read(pool, key);
        let ps = shard.pools.get(pool)?;
        ps.records.get(key).map(|e| e.to_record(&ps.names, pool, key))
    }

    /// Pins `key` to `server` for `ttl`, replacing any record.
    pub fn assign(&self, pool: &str, key: &str, server: &str, ttl: Duration, now_ms: u64) -> SessionRecord {
        let mut shard = self.write(pool, key);
        let ps = pool_mut(&mut shard, pool);
        self.write_entry(ps, pool, key, server, ttl_ms(ttl, now_ms), false, now_ms)
    }

    /// Keeps the live owner of `key` if there is one, else assigns `server`:
    /// two connections racing for a new key end up on the same server.
    pub fn claim(&self, pool: &str, key: &str, server: &str, ttl: Duration, now_ms: u64) -> Claim {
        let mut shard = self.write(pool, key);
        let ps = pool_mut(&mut shard, pool);
        if let Some(e) = ps.records.get(key).filter(|e| e.is_live(now_ms)) {
            return Claim { server: ps.names.text(e.server).clone(), written: None };
        }
        let rec = self.write_entry(ps, pool, key, server, ttl_ms(ttl, now_ms), false, now_ms);
        // The entry just written: its interned name, not a new allocation.
        Claim { server: ps.names.text(ps.records[key].server).clone(), written: Some(rec) }
    }

    /// Extends the record of a tunnel still open to `server` once less than
    /// half of `ttl` remains.
    pub fn touch(&self, pool: &str, key: &str, server: &str, ttl: Duration, now_ms: u64) -> Touch {
        let mut shard = self.write(pool, key);
        let Some(ps) = shard.pools.get_mut(pool) else { return Touch::Missing };
        let Some(e) = ps.records.get(key).filter(|e| e.is_live(now_ms)) else { return Touch::Missing };
        let owner = ps.names.text(e.server);
        if &**owner != server {
            return Touch::Moved(owner.clone());
        }
        let ttl = ttl.as_millis() as u64;
        if e.expires_at_ms - now_ms > ttl / 2 {
            return Touch::Fresh;
        }
        Touch::Refreshed(self.write_entry(ps, pool, key, server, now_ms.saturating_add(ttl), false, now_ms))
    }

    /// Replaces a live record by a tombstone, kept for the tombstone TTL.
    /// `None` when there was nothing to remove.
    pub fn remove(&self, pool: &str, key: &str, now_ms: u64) -> Option<SessionRecord> {
        let mut shard = self.write(pool, key);
        let ps = shard.pools.get_mut(pool)?;
        let server = ps.names.text(ps.records.get(key).filter(|e| !e.is_tombstone())?.server).clone();
        let until = now_ms.saturating_add(self.tombstone_ttl_ms);
        Some(self.write_entry(ps, pool, key, &server, until, true, now_ms))
    }

    /// Applies a record from a peer or from the store if it wins over the one
    /// held (last writer wins on version, then origin). Refused: records
    /// already expired at `now_ms`, and records versioned more than
    /// [`MAX_DRIFT_MS`] ahead of `now_ms` (a peer with a wrong clock would
    /// otherwise win every conflict for as long as its clock is wrong).
    /// Returns whether the table changed.
    pub fn merge(&self, record: SessionRecord, now_ms: u64) -> bool {
        if record.version.physical_ms() > now_ms.saturating_add(MAX_DRIFT_MS) || record.expires_at_ms <= now_ms {
            return false;
        }
        self.clock.observe_at(record.version, now_ms);
        let mut shard = self.write(&record.pool, &record.key);
        let ps = pool_mut(&mut shard, &record.pool);
        if let Some(e) = ps.records.get(record.key.as_str()) {
            if (record.version, record.origin.as_str()) <= (e.version, &**ps.names.text(e.origin())) {
                return false;
            }
        }
        let entry = ps.entry(&record.server, &record.origin, record.expires_at_ms, record.version, record.tombstone);
        ps.put(&record.key, entry);
        true
    }

    /// Live records per server of `pool` (including records expired since
    /// the last sweep).
    pub fn counts_per_server(&self, pool: &str) -> HashMap<String, usize> {
        let mut out: HashMap<String, usize> = HashMap::new();
        for shard in self.shards.iter() {
            let shard = shard.read().unwrap_or_else(|e| e.into_inner());
            let Some(ps) = shard.pools.get(pool) else { continue };
            for (server, n) in ps.names.live_counts() {
                match out.get_mut(server) {
                    Some(total) => *total += n,
                    None => {
                        out.insert(server.to_owned(), n);
                    }
                }
            }
        }
        out
    }

    /// Drops records and tombstones whose time is up; returns how many.
    /// Holds one shard's lock at a time.
    pub fn sweep(&self, now_ms: u64) -> usize {
        let mut removed = 0;
        for shard in self.shards.iter() {
            let mut shard = shard.write().unwrap_or_else(|e| e.into_inner());
            shard.pools.retain(|_, ps| {
                let PoolShard { records, names } = ps;
                records.retain(|_, e| {
                    if e.expires_at_ms > now_ms {
                        return true;
                    }
                    e.release(names);
                    removed += 1;
                    false
                });
                !records.is_empty()
            });
        }
        removed
    }

    /// Every record held, tombstones included, for a peer's full catch-up.
    pub fn snapshot(&self) -> Vec<SessionRecord> {
        let mut out = Vec::with_capacity(self.len());
        for shard in self.shards.iter() {
            let shard = shard.read().unwrap_or_else(|e| e.into_inner());
            for (pool, ps) in &shard.pools {
                out.extend(ps.records.iter().map(|(key, e)| e.to_record(&ps.names, pool, key)));
            }
        }
        out
    }

    /// Records held, tombstones and unswept expired records included.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().unwrap_or_else(|e| e.into_inner()).pools.values().map(|p| p.records.len()).sum::<usize>())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes a local version of `key`, newer than the record it replaces, so
    /// it wins on every node.
    #[allow(clippy::too_many_arguments)]
    fn write_entry(
        &self,
        ps: &mut PoolShard,
        pool: &str,
        key: &str,
        server: &str,
        expires_at_ms: u64,
        tombstone: bool,
        now_ms: u64,
    ) -> SessionRecord {
        // Every held record was issued or observed by the clock (merge refuses
        // what observe would not take), so this version beats it.
        let version = self.clock.now_at(now_ms);
        debug_assert!(ps.records.get(key).is_none_or(|old| old.version < version));
        let entry = ps.entry(server, &self.node, expires_at_ms, version, tombstone);
        let rec = entry.to_record(&ps.names, pool, key);
        ps.put(key, entry);
        rec
    }

    fn shard(&self, pool: &str, key: &str) -> &RwLock<Shard> {
        let h = self.hasher.hash_one((pool, key));
        &self.shards[(h as usize) % SHARDS]
    }

    fn read(&self, pool: &str, key: &str) -> RwLockReadGuard<'_, Shard> {
        self.shard(pool, key).read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self, pool: &str, key: &str) -> RwLockWriteGuard<'_, Shard> {
        self.shard(pool, key).write().unwrap_or_else(|e| e.into_inner())
    }
}

fn ttl_ms(ttl: Duration, now_ms: u64) -> u64 {
    now_ms.saturating_add(ttl.as_millis() as u64)
}

/// The pool's part of a shard, created on first write. (Writes allocate
/// the pool name; lookups on the read path do not.)
fn pool_mut<'a>(shard: &'a mut Shard, pool: &str) -> &'a mut PoolShard {
    shard.pools.entry(pool.to_owned()).or_default()
}

impl PoolShard {
    /// A new entry, holding its names.
    fn entry(&mut self, server: &str, origin: &str, expires_at_ms: u64, version: Hlc, tombstone: bool) -> Entry {
        let server = self.names.acquire(server);
        let origin = self.names.acquire(origin).bits();
        let origin_and_tombstone = if tombstone { origin | TOMBSTONE_BIT } else { origin };
        Entry { expires_at_ms, version, server, origin_and_tombstone }
    }

    /// Stores `entry` under `key`, moving the live counts along and
    /// releasing the names of the entry it replaces.
    fn put(&mut self, key: &str, entry: Entry) {
        if !entry.is_tombstone() {
            self.names.count_live(entry.server);
        }
        let old = match self.records.get_mut(key) {
            Some(slot) => Some(std::mem::replace(slot, entry)),
            None => self.records.insert(key.into(), entry),
        };
        if let Some(old) = old {
            old.release(&mut self.names);
        }
    }
}

impl Entry {
    fn is_tombstone(&self) -> bool {
        self.origin_and_tombstone & TOMBSTONE_BIT != 0
    }

    fn origin(&self) -> NameId {
        NameId::from_bits(self.origin_and_tombstone & !TOMBSTONE_BIT)
    }

    fn is_live(&self, now_ms: u64) -> bool {
        !self.is_tombstone() && now_ms < self.expires_at_ms
    }

    /// Lets go of its names (and its live count) as it leaves the table.
    fn release(&self, names: &mut Names) {
        if !self.is_tombstone() {
            names.uncount_live(self.server);
        }
        names.release(self.server);
        names.release(self.origin());
    }

    fn to_record(&self, names: &Names, pool: &str, key: &str) -> SessionRecord {
        SessionRecord {
            key: key.to_owned(),
            pool: pool.to_owned(),
            server: names.text(self.server).to_string(),
            expires_at_ms: self.expires_at_ms,
            version: self.version,
            origin: names.text(self.origin()).to_string(),
            tombstone: self.is_tombstone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);
    const T0: u64 = 1_700_000_000_000;

    fn counts(t: &Table, pool: &str) -> Vec<(String, usize)> {
        let mut v: Vec<_> = t.counts_per_server(pool).into_iter().collect();
        v.sort();
        v
    }

    fn c(pairs: &[(&str, usize)]) -> Vec<(String, usize)> {
        pairs.iter().map(|(s, n)| (s.to_string(), *n)).collect()
    }

    /// Counts recomputed the slow way, to check the incremental ones.
    fn recount(t: &Table, pool: &str) -> Vec<(String, usize)> {
        let mut m: HashMap<String, usize> = HashMap::new();
        for r in t.snapshot().into_iter().filter(|r| r.pool == pool && !r.tombstone) {
            *m.entry(r.server).or_default() += 1;
        }
        let mut v: Vec<_> = m.into_iter().collect();
        v.sort();
        v
    }

    fn peer_record(key: &str, server: &str, version: Hlc, origin: &str) -> SessionRecord {
        SessionRecord {
            key: key.into(),
            pool: "agents".into(),
            server: server.into(),
            expires_at_ms: T0 + 3_600_000,
            version,
            origin: origin.into(),
            tombstone: false,
        }
    }

    #[test]
    fn assign_then_get_until_expiry() {
        let t = Table::new("lb1");
        assert_eq!(t.get("agents", "h1", T0), None);
        let r = t.assign("agents", "h1", "s1", HOUR, T0);
        assert_eq!((r.server.as_str(), r.expires_at_ms, r.origin.as_str()), ("s1", T0 + 3_600_000, "lb1"));
        assert_eq!(t.get("agents", "h1", T0 + 1).as_deref(), Some("s1"));
        assert_eq!(t.get("agents", "h1", T0 + 3_600_000), None, "expired");
        // Pools are separate namespaces.
        assert_eq!(t.get("api", "h1", T0), None);
        assert_eq!(t.record("agents", "h1"), Some(r));
    }

    #[test]
    fn reassign_moves_the_count() {
        let t = Table::new("lb1");
        t.assign("agents", "h1", "s1", HOUR, T0);
        t.assign("agents", "h2", "s1", HOUR, T0);
        assert_eq!(counts(&t, "agents"), c(&[("s1", 2)]));
        let r1 = t.record("agents", "h1").unwrap();
        let r2 = t.assign("agents", "h1", "s2", HOUR, T0 + 5);
        assert!(r2.version > r1.version);
        assert_eq!(t.get("agents", "h1", T0 + 6).as_deref(), Some("s2"));
        assert_eq!(counts(&t, "agents"), c(&[("s1", 1), ("s2", 1)]));
        // Re-assigning to the same server changes nothing in the counts.
        t.assign("agents", "h1", "s2", HOUR, T0 + 7);
        assert_eq!(counts(&t, "agents"), c(&[("s1", 1), ("s2", 1)]));
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn claim_keeps_a_live_owner() {
        let t = Table::new("lb1");
        let first = t.claim("agents", "h1", "s1", HOUR, T0);
        assert_eq!(&*first.server, "s1");
        assert!(first.written.is_some());
        let second = t.claim("agents", "h1", "s2", HOUR, T0 + 1);
        assert_eq!(second, Claim { server: Arc::from("s1"), written: None });
        // Once expired, the next claim takes over.
        let third = t.claim("agents", "h1", "s2", HOUR, T0 + 3_600_000);
        assert_eq!(&*third.server, "s2");
        assert_eq!(counts(&t, "agents"), c(&[("s2", 1)]));
    }

    #[test]
    fn touch_refreshes_only_when_half_the_ttl_is_gone() {
        let t = Table::new("lb1");
        t.assign("agents", "h1", "s1", HOUR, T0);
        assert_eq!(t.touch("agents", "h1", "s1", HOUR, T0 + 1000), Touch::Fresh);
        let later = T0 + 1_800_001;
        let Touch::Refreshed(r) = t.touch("agents", "h1", "s1", HOUR, later) else { panic!("not refreshed") };
        assert_eq!(r.expires_at_ms, later + 3_600_000);
        assert_eq!(t.get("agents", "h1", T0 + 3_600_001).as_deref(), Some("s1"));
        assert_eq!(t.touch("agents", "h1", "s2", HOUR, later), Touch::Moved(Arc::from("s1")));
        assert_eq!(t.touch("agents", "nope", "s1", HOUR, later), Touch::Missing);
        assert_eq!(t.touch("api", "h1", "s1", HOUR, later), Touch::Missing);
        assert_eq!(t.touch("agents", "h1", "s1", HOUR, later + 3_600_000), Touch::Missing, "expired");
        assert_eq!(counts(&t, "agents"), c(&[("s1", 1)]));
    }

    #[test]
    fn remove_leaves_a_tombstone_that_blocks_older_records() {
        let t = Table::new("lb1").with_tombstone_ttl(Duration::from_secs(60));
        let r = t.assign("agents", "h1", "s1", HOUR, T0);
        let tomb = t.remove("agents", "h1", T0 + 10).unwrap();
        assert!(tomb.tombstone && tomb.version > r.version);
        assert_eq!(tomb.expires_at_ms, T0 + 10 + 60_000);
        assert_eq!(t.get("agents", "h1", T0 + 11), None);
        assert_eq!(counts(&t, "agents"), c(&[]));
        assert_eq!(t.remove("agents", "h1", T0 + 12), None, "already removed");
        assert_eq!(t.remove("agents", "other", T0 + 12), None);
        // The pre-removal record arriving late from a peer does not revive it.
        assert!(!t.merge(r, T0 + 20));
        assert_eq!(t.get("agents", "h1", T0 + 21), None);
        // The tombstone is forgotten after its TTL.
        assert_eq!(t.sweep(T0 + 10 + 60_000), 1);
        assert!(t.is_empty());
    }

    #[test]
    fn merge_is_last_writer_wins_and_moves_counts() {
        let t = Table::new("lb1");
        let local = t.assign("agents", "h1", "s1", HOUR, T0);
        // Older version from a peer: refused.
        assert!(!t.merge(peer_record("h1", "s2", Hlc::from_parts(T0 - 1, 0), "lb2"), T0));
        assert_eq!(t.get("agents", "h1", T0).as_deref(), Some("s1"));
        // Same version, greater origin: wins.
        assert!(t.merge(peer_record("h1", "s2", local.version, "lb2"), T0));
        assert_eq!(t.get("agents", "h1", T0).as_deref(), Some("s2"));
        assert_eq!(counts(&t, "agents"), c(&[("s2", 1)]));
        // The identical record again: no change.
        assert!(!t.merge(peer_record("h1", "s2", local.version, "lb2"), T0));
        // Newer version: wins; counts follow.
        let newer = peer_record("h1", "s3", Hlc::from_parts(T0 + 5, 0), "lb3");
        assert!(t.merge(newer.clone(), T0));
        assert_eq!(t.record("agents", "h1"), Some(newer));
        assert_eq!(counts(&t, "agents"), c(&[("s3", 1)]));
        // A tombstone from a peer removes it.
        let mut tomb = peer_record("h1", "s3", Hlc::from_parts(T0 + 6, 0), "lb2");
        tomb.tombstone = true;
        assert!(t.merge(tomb, T0));
        assert_eq!(t.get("agents", "h1", T0), None);
        assert_eq!(counts(&t, "agents"), c(&[]));
    }

    #[test]
    fn merge_refuses_expired_and_future_records() {
        let t = Table::new("lb1");
        let mut expired = peer_record("h1", "s1", Hlc::from_parts(T0, 0), "lb2");
        expired.expires_at_ms = T0;
        assert!(!t.merge(expired, T0));
        let future = peer_record("h1", "s1", Hlc::from_parts(T0 + MAX_DRIFT_MS + 1, 0), "lb2");
        assert!(!t.merge(future, T0));
        assert!(t.is_empty());
    }

    #[test]
    fn local_writes_win_over_what_they_replace() {
        let t = Table::new("a-node");
        // A peer whose clock runs 30 s ahead wrote this record.
        let ahead = Hlc::from_parts(T0 + 30_000, 9);
        assert!(t.merge(peer_record("h1", "s1", ahead, "z-node"), T0));
        let mine = t.assign("agents", "h1", "s2", HOUR, T0);
        assert!(mine.version > ahead, "{} <= {}", mine.version, ahead);
        // Any node receiving both keeps the local reassignment.
        let other = Table::new("x");
        assert!(other.merge(peer_record("h1", "s1", ahead, "z-node"), T0));
        assert!(other.merge(mine, T0));
        assert_eq!(other.get("agents", "h1", T0).as_deref(), Some("s2"));
    }

    #[test]
    fn sweep_drops_expired_records_and_their_counts() {
        let t = Table::new("lb1").with_tombstone_ttl(Duration::from_secs(1));
        t.assign("agents", "short", "s1", Duration::from_secs(10), T0);
        t.assign("agents", "long", "s1", HOUR, T0);
        t.assign("api", "x", "s9", Duration::from_secs(10), T0);
        t.assign("agents", "gone", "s2", HOUR, T0);
        t.remove("agents", "gone", T0);
        assert_eq!(counts(&t, "agents"), c(&[("s1", 2)]));
        assert_eq!(t.sweep(T0 + 999), 0);
        assert_eq!(t.sweep(T0 + 10_000), 3, "two expired records and one tombstone");
        assert_eq!(counts(&t, "agents"), c(&[("s1", 1)]));
        assert_eq!(counts(&t, "api"), c(&[]));
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn counts_stay_exact_through_random_operations() {
        let t = Table::new("lb1").with_tombstone_ttl(Duration::from_secs(5));
        let peer = Table::new("lb2");
        let mut rng = fastrand::Rng::with_seed(7);
        let servers = ["s1", "s2", "s3"];
        let mut now = T0;
        for _ in 0..5000 {
            now += rng.u64(0..200);
            let pool = if rng.bool() { "agents" } else { "api" };
            let key = format!("h{}", rng.u32(0..60));
            let server = servers[rng.usize(0..3)];
            let ttl = Duration::from_millis(rng.u64(1..20_000));
            match rng.u8(0..6) {
                0 => {
                    t.assign(pool, &key, server, ttl, now);
                }
                1 => {
                    t.claim(pool, &key, server, ttl, now);
                }
                2 => {
                    t.touch(pool, &key, server, ttl, now);
                }
                3 => {
                    t.remove(pool, &key, now);
                }
                4 => {
                    // A peer's write, sometimes a tombstone, sometimes stale.
                    let mut r = peer.assign(pool, &key, server, ttl, now.saturating_sub(rng.u64(0..2000)));
                    r.tombstone = rng.u8(0..4) == 0;
                    t.merge(r, now);
                }
                _ => {
                    t.sweep(now);
                }
            }
            for pool in ["agents", "api"] {
                assert_eq!(counts(&t, pool), recount(&t, pool));
            }
            assert_names_match_records(&t);
        }
    }

    /// Each pool shard holds exactly the names its records use, each once
    /// per use: none leaked, none released early.
    fn assert_names_match_records(t: &Table) {
        for shard in t.shards.iter() {
            let shard = shard.read().unwrap();
            for ps in shard.pools.values() {
                let mut m: HashMap<String, usize> = HashMap::new();
                for e in ps.records.values() {
                    *m.entry(ps.names.text(e.server).to_string()).or_default() += 1;
                    *m.entry(ps.names.text(e.origin()).to_string()).or_default() += 1;
                }
                let mut want: Vec<_> = m.into_iter().collect();
                want.sort();
                assert_eq!(ps.names.refs(), want);
            }
        }
    }

    #[test]
    fn an_entry_stays_24_bytes_and_its_slot_40() {
        // Was 56 and 80: `Arc<str>` server and origin, a padded `bool`,
        // a `String` key. Every byte here is paid per record, times the
        // map's spare slots, for up to a million records.
        assert_eq!(std::mem::size_of::<Entry>(), 24);
        assert_eq!(std::mem::size_of::<(Box<str>, Entry)>(), 40);
    }

    #[test]
    fn names_go_with_the_records_that_use_them() {
        let t = Table::new("lb1").with_tombstone_ttl(Duration::from_secs(1));
        t.assign("agents", "h1", "s1", HOUR, T0);
        assert!(t.merge(peer_record("h2", "s2", Hlc::from_parts(T0, 0), "lb2"), T0));
        t.assign("agents", "h1", "s3", HOUR, T0);
        let tomb = t.remove("agents", "h2", T0).unwrap();
        assert_eq!((tomb.server.as_str(), tomb.origin.as_str()), ("s2", "lb1"), "a tombstone keeps its server");
        assert_names_match_records(&t);
        let held = |t: &Table| -> Vec<String> {
            let mut v: Vec<_> = t
                .shards
                .iter()
                .flat_map(|s| {
                    let s = s.read().unwrap();
                    s.pools.values().flat_map(|ps| ps.names.refs()).map(|(n, _)| n).collect::<Vec<_>>()
                })
                .collect();
            v.sort();
            v.dedup();
            v
        };
        assert_eq!(held(&t), ["lb1", "s2", "s3"]);
        assert_eq!(t.sweep(T0 + 1000), 1, "the tombstone");
        assert_eq!(held(&t), ["lb1", "s3"]);
    }

    #[test]
    fn concurrent_assigns_keep_counts_exact() {
        let t = Arc::new(Table::new("lb1"));
        let threads: Vec<_> = (0..4)
            .map(|i| {
                let t = t.clone();
                std::thread::spawn(move || {
                    for k in 0..500 {
                        // Every thread writes the same keys to its own server.
                        t.assign("agents", &format!("h{k}"), &format!("s{i}"), HOUR, T0);
                        assert!(t.get("agents", &format!("h{k}"), T0).is_some());
                    }
                })
            })
            .collect();
        for th in threads {
            th.join().unwrap();
        }
        assert_eq!(t.len(), 500);
        assert_eq!(t.counts_per_server("agents").values().sum::<usize>(), 500);
        assert_eq!(counts(&t, "agents"), recount(&t, "agents"));
    }

    #[test]
    fn snapshot_round_trips_into_another_table() {
        let a = Table::new("lb1");
        a.assign("agents", "h1", "s1", HOUR, T0);
        a.assign("agents", "h2", "s2", HOUR, T0);
        a.assign("api", "h3", "s1", HOUR, T0);
        a.remove("agents", "h2", T0 + 1);
        let b = Table::new("lb2");
        for r in a.snapshot() {
            assert!(b.merge(r, T0 + 2));
        }
        let mut sa = a.snapshot();
        let mut sb = b.snapshot();
        sa.sort_by(|x, y| (&x.pool, &x.key).cmp(&(&y.pool, &y.key)));
        sb.sort_by(|x, y| (&x.pool, &x.key).cmp(&(&y.pool, &y.key)));
        assert_eq!(sa, sb);
        assert_eq!(counts(&b, "agents"), c(&[("s1", 1)]));
        // b's next local write is newer than everything it learned.
        let max = sa.iter().map(|r| r.version).max().unwrap();
        assert!(b.assign("agents", "h9", "s1", HOUR, T0 + 2).version > max);
    }
}
