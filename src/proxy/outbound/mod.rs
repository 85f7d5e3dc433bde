//! Outbound: what happens to a request that goes to a server, and what
//! comes back. [`forward`] runs the attempts (server choice with
//! [`affinity`] and the pool's balancing, retries classified by
//! [`failure`], passive health); each attempt takes a connection from the
//! server's [`pool`] ([`server_io`]: plain or TLS, with the send timeout)
//! and speaks HTTP/1.1 on it with [`h1client`]; the answer goes back as a
//! [`response::ProxyBody`], or, after a `101`, as a WebSocket [`tunnel`]
//! started by [`upgrade`]. [`check`] makes the active health checks' probes
//! with the same connection and HTTP/1.1 code.

pub mod affinity;
pub mod check;
pub mod failure;
pub mod forward;
pub mod h1client;
pub mod pool;
pub mod relay;
pub mod response;
pub mod server_io;
pub mod tunnel;
pub mod upgrade;
