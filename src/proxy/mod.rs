//! The data plane, in the order a request passes through it:
//!
//! 1. [`inbound`]: the listener accepts, the connection's I/O wrapper runs
//!    its timers, HTTP/1.1 (the node's fast path, or hyper) or HTTP/2
//!    reads the request head.
//! 2. [`route`]: the request is checked ([`wire::request::check`]: `Host`,
//!    path normalisation), a route matched, its rate limit applied, and its
//!    action run: a fixed answer, a redirect, a static file, or
//! 3. [`outbound`]: forwarding to the route's pool: server choice,
//!    retries, HTTP/1.1 to the server over a pooled connection, the
//!    response body or the WebSocket tunnel back to the client.
//!
//! Beside them, used by all three and importing none of them: [`wire`]
//! (every byte of HTTP/1.1 on the wire, both directions), [`body`] (request
//! bodies), [`activity`] (a connection's activity, shared by its requests),
//! [`headers`], [`error`] and [`idle_timer`]. Dependencies run one way:
//! inbound → route → outbound → the modules beside them
//! (`tests/architecture.rs` checks it).
//!
//! Reads the immutable [`crate::state::Snapshot`] through an `ArcSwap`;
//! never imports `admin`, `control`, `cluster` or the session store's
//! writer. Nothing here holds a lock across an `.await`.

pub mod activity;
pub mod body;
pub mod error;
pub mod headers;
pub mod idle_timer;
pub mod inbound;
pub mod outbound;
pub mod route;
pub mod wire;

pub use inbound::listener::{bind_all, serve, ListenerStats, Retire, ServeOptions};
pub use outbound::tunnel::{End as TunnelEnd, Shed};
pub use route::stats::RouteStats;
pub use route::{ProxyState, Shared};
