//! Inbound: a client connection from accept to close. [`listener`] binds
//! and accepts (connection cap, PROXY protocol header, TLS handshake,
//! HTTP/1.1 or HTTP/2), [`conn::ClientIo`] wraps the socket with the header
//! and keep-alive timers and decides when an idle connection is parked,
//! [`http1`] serves HTTP/1.1 (the node's own fast path for body-less
//! requests, answered through [`sending`]; hyper for the rest; HTTP/2 is
//! hyper's), and [`closing`] ends idle connections at shutdown. Each
//! request then goes to [`crate::proxy::route::handle`].

pub mod closing;
pub mod conn;
pub mod handshakes;
pub mod http1;
pub mod listener;
pub mod sending;
