//! The node in its cluster: turns gossip into local state and local state
//! into gossip. Nothing here is on the request path: the proxy reads only
//! atomics in [`crate::health::ServerState`], the rate-limit zones and the
//! session table, which this module writes.
//!
//! # One session record, from this node to a peer
//!
//! 1. The proxy picks a server for a new affinity key
//!    (`proxy::affinity`) and writes a [`crate::sessions::SessionRecord`]
//!    into the session table (`sessions::table`: `claim`, `assign`, `touch`,
//!    `remove`), versioned by this node's hybrid logical clock.
//! 2. `Sessions::persist` queues it for the store (`sessions::store`, redb)
//!    and for gossip, into the [`outbox`] — whose sending half `Control`
//!    gave the store when it opened it. Neither queue is awaited.
//! 3. The replication task ([`runtime`]) takes a batch from the outbox;
//!    [`record`] maps each record to its gossip entry
//!    `session:{pool}:{key}` = `{L|T} {expires} {hlc} {origin} {server}`,
//!    and `cluster::Cluster::set_many` sets it as a TTL key (encoded by
//!    `cluster::keys`, sent by chitchat over `cluster::transport`).
//! 4. On a peer, chitchat's state changes; `cluster::members` turns it into
//!    a `ClusterChange::Set`, which the peer's replication task hands to
//!    [`peers`]: [`record`] maps the entry back to a record and
//!    `Sessions::merge_remote` keeps it if it wins (last writer wins,
//!    `sessions::record::wins`) in the table and the store. A merged record
//!    is never gossiped again.
//! 5. A record that left gossip's window (a node joining, restarting, or
//!    reset by chitchat) travels by [`catchup`] instead: the whole table
//!    over the cluster API, in the same encoding, merged the same way.
//!
//! # Files
//!
//! - [`runtime`]: [`ClusterRuntime`] (start, members, leave) and the task
//!   that connects gossip to the node's state;
//! - [`view`]: [`ClusterView`], what peers published and the sync status
//!   (read by the admin API and [`crate::control::primary`]);
//! - [`record`]: the one mapping between session records and gossip entries;
//! - [`outbox`]: local session records on their way to gossip;
//! - [`peers`]: one handler per kind of peer change;
//! - [`reconcile`]: health views, loads, rate counts and primary choices this
//!   node publishes, and what it derives from the peers' (remote
//!   connections, the active primaries);
//! - [`catchup`]: serving and fetching the whole session table;
//! - [`faults`]: the fault-file hook of end-to-end tests.
//!
//! Depends on `cluster` (gossip), `sessions`, `health`, `state` and
//! [`crate::control::primary`]; `primary` depends only on [`view`].

mod catchup;
mod faults;
mod outbox;
mod peers;
mod reconcile;
mod record;
mod runtime;
pub mod view;

pub use faults::FAULT_FILE_ENV;
pub use outbox::{channel as session_outbox, Outbox};
pub(super) use peers::apply as apply_peer_change;

/// Session records from a peer's catch-up body (one `{key}\t{value}` line
/// per record), and how many lines were malformed: the parser of bytes from
/// peers, public for the fuzz target `session_lines`.
#[doc(hidden)]
pub fn parse_session_lines(body: &str) -> (Vec<crate::sessions::SessionRecord>, usize) {
    record::decode_lines(body)
}

/// The catch-up body of `records` ([`parse_session_lines`] reads it back).
#[doc(hidden)]
pub fn session_lines(records: Vec<crate::sessions::SessionRecord>) -> String {
    record::encode_lines(records)
}
pub use runtime::ClusterRuntime;
pub use view::ClusterView;
