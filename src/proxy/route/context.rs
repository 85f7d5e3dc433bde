//! What inbound hands to each request's handling: the facts of the client
//! connection ([`ConnInfo`]), the settings of the listener it came through
//! that requests read ([`ListenerPolicy`]), and the one way to answer
//! without a response ([`CloseConnection`]).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use crate::config::Cidr;
use crate::proxy::activity::ConnActivity;
use crate::proxy::headers::X_FORWARDED_FOR;

/// A listener's settings that apply to every request on it.
pub struct ListenerPolicy {
    pub name: String,
    pub redirect_to_https: Option<u16>,
    pub redirect_except: Vec<String>,
    pub trusted_proxies: Vec<Cidr>,
}

impl ListenerPolicy {
    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|c| c.contains(ip))
    }
}

/// Facts about one client connection.
pub struct ConnInfo {
    /// The client as far as the connection tells: the TCP peer, or the
    /// source of a PROXY protocol header.
    pub peer: SocketAddr,
    /// The TCP peer itself.
    pub tcp_peer: SocketAddr,
    /// The address the client connected to.
    pub local: SocketAddr,
    pub tls: bool,
    pub listener: Arc<ListenerPolicy>,
    pub activity: Arc<ConnActivity>,
    /// How a WebSocket tunnel takes this connection out of hyper.
    pub unwrap_upgraded: crate::proxy::outbound::tunnel::UnwrapClient,
}

impl ConnInfo {
    /// The real client IP: the connection's client, or, when that is a
    /// trusted proxy, the right-most address in `X-Forwarded-For` that is not
    /// a trusted proxy. Untrusted peers' headers are ignored.
    pub fn client_ip(&self, headers: &http::HeaderMap) -> (IpAddr, bool) {
        let immediate = self.peer.ip();
        if self.listener.trusted_proxies.is_empty() || !self.listener.trusts(immediate) {
            return (immediate, false);
        }
        let mut leftmost = None;
        for v in headers.get_all(&X_FORWARDED_FOR).iter().rev() {
            let Ok(s) = v.to_str() else { continue };
            for part in s.rsplit(',') {
                let Ok(ip) = part.trim().parse::<IpAddr>() else { continue };
                if !self.listener.trusts(ip) {
                    return (ip, true);
                }
                leftmost = Some(ip);
            }
        }
        (leftmost.unwrap_or(immediate), true)
    }
}

/// Returned instead of a response when the connection must close without
/// one (an agent's WebSocket upgrade with no server to take it).
#[derive(Debug, thiserror::Error)]
#[error("closing the connection without a response: {0}")]
pub struct CloseConnection(pub &'static str);
