//! Sticky sessions: which request belongs to which server, kept in memory
//! for the request path, persisted to redb, and shared with peers.
//!
//! - [`key`]: the affinity key of a request (cookie, query, header; the
//!   hostname inside a SysManage token, a JWT claim). Pure.
//! - [`record`]: [`SessionRecord`], hybrid-logical-clock versions, and the
//!   last-writer-wins rule every node applies. Pure.
//! - [`table`]: the concurrent in-memory table `proxy` reads and writes.
//! - [`policy`]: which server a new session goes to. Pure.
//! - [`store`]: the redb file and its single group-committing writer thread.
//! - [`sweeper`]: the background task that drops expired records.
//!
//! Called by `proxy` (key, table, policy), `cluster` (records, table), and
//! `app` (store, sweeper). Depends on `balance` only for its stable hashes.
//! The request path touches only the table: it never waits on the store,
//! which is fed through a non-blocking queue.

pub mod key;
pub mod policy;
pub mod record;
pub mod store;
pub mod sweeper;
pub mod table;

pub use key::{AffinityKey, KeyError, KeySpecError};
pub use policy::{Candidate, Policy};
pub use record::{unix_now_ms, wins, Hlc, HlcClock, SessionRecord};
pub use store::{Store, StoreError, StoreHandle, StoreOptions, StoreStats};
pub use sweeper::spawn_sweeper;
pub use table::{Claim, Table, Touch};
