//! The data path through a node started in-process: HTTP/1.1 and HTTP/2,
//! TLS on both sides, keep-alive, client addresses (PROXY protocol,
//! forwarded headers), the upstream HTTP/1 client, WebSocket tunnels.

#[path = "../support/mod.rs"]
mod support;

mod client_ip;
mod draining;
mod http;
mod https;
mod keepalive;
mod proxy_protocol;
mod reconnect_storm;
mod send_timeout;
mod tls;
mod tunnel_lifecycle;
mod upstream_http1;
mod upstream_tls;
mod websocket;
