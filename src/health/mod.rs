//! Server health: runtime state per server ([`server`]), passive health from
//! the proxy's own failures ([`passive`]), active probes ([`active`]) and the
//! recent-events list ([`events`]).
//!
//! Active checks are authoritative for local traffic; passive failures take a
//! server out for at most `fail_timeout`, after which the probes decide.

pub mod active;
pub mod events;
pub mod passive;
pub mod server;

pub use events::EventLog;
pub use passive::PassiveHealth;
pub use server::{AdminState, ServerState, Transition, TunnelEvents, TUNNEL_BELL};
