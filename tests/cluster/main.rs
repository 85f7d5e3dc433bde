//! Clusters: the gossip layer and its encrypted transport, nodes in one
//! process, and real processes on loopback addresses.

#[path = "../support/mod.rs"]
mod support;

mod datagram_fuzz;
mod e2e;
mod gossip;
mod logic;
mod rolling_upgrade;
mod transport;
