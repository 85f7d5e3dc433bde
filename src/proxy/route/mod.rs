//! Route: one request's handling, from the request check to the response
//! headers ([`handle`]). [`context`] is what inbound hands over (the
//! connection's facts, the listener's policy), [`state`] what every request
//! of a configuration generation reads (built at reload), [`matching`] picks
//! the route, and a route's action is a fixed answer, a redirect, a
//! [`static_files`] file, or forwarding (`crate::proxy::outbound`).
//! [`stats`] counts requests by route.

pub mod context;
pub mod handle;
pub mod matching;
pub mod state;
pub mod static_files;
pub mod stats;

pub use handle::handle;
pub use state::{ProxyState, Shared};
