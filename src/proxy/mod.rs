//! The data plane: listeners, the per-request service, forwarding to pools,
//! static files and WebSocket tunnels.
//!
//! Reads the immutable [`crate::state::Snapshot`] through an `ArcSwap`;
//! never imports `admin`, `control`, `cluster` or the session store. Nothing
//! here holds a lock across an `.await`.
//!
//! Request flow: [`listener`] accepts and wraps the socket in
//! [`conn::ClientIo`] (timeouts) → [`http1`] reads the head ([`wire`]: the
//! fast path, or hyper) → [`service::handle`] checks it
//! ([`wire::request::check`]: `Host`, path normalisation) and matches a
//! route ([`routing`]) → the action: [`forward`] (server choice, retries,
//! [`headers`] rewriting, [`h1client`] speaking HTTP/1.1 to the server over
//! an [`upstream`] connection, [`body`] streaming), [`static_files`], a
//! fixed response or a redirect → security headers, metrics, access log.
//! Every byte on the HTTP/1.1 wire, in both directions, is [`wire`]'s.

pub mod affinity;
pub mod body;
pub mod closing;
pub mod conn;
pub mod error;
pub mod forward;
pub mod h1client;
pub mod headers;
pub mod http1;
pub mod idle_timer;
pub mod listener;
pub mod route_stats;
pub mod routing;
pub mod service;
pub mod static_files;
pub mod tunnel;
pub mod upstream;
pub mod upstream_io;
pub mod wire;

pub use listener::{bind_all, serve, ServeOptions};
pub use route_stats::RouteStats;
pub use service::{ProxyState, Shared};
