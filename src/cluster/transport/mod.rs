//! The gossip transport: chitchat's `Transport` over UDP where every
//! datagram is encrypted and authenticated with a key derived from the
//! cluster secret, and replayed or stale datagrams are refused.
//!
//! - [`wire`]: datagram format, key derivation, seal/open (pure);
//! - [`replay`]: replay window, id cache, fragment reassembly (pure);
//! - [`datagram`]: message ⇄ datagrams with those rules (pure);
//! - `relay`: chitchat envelope ⇄ bytes (chitchat keeps its codec private);
//! - [`fault`]: test-only drop/delay/partition at send time;
//! - `stats`: counters by drop reason, read as [`TransportStats`].
//!
//! Called only by chitchat's server task; nothing on the request path.
//! Every failure on receipt is dropped, counted, and logged at debug (a
//! rate-limited warning for authentication failures): never a panic, never
//! an error that would stop gossip.

pub mod datagram;
pub mod fault;
mod relay;
pub mod replay;
mod stats;
pub mod wire;

use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::Context;
use async_trait::async_trait;
use chitchat::transport::{RecvOutcome, SendOutcome, Socket, Transport};
use chitchat::ChitchatEnvelope;
use tracing::{debug, warn};

pub use datagram::{Opener, SealError, Sealer};
pub use fault::{FaultInjector, FaultSpecError, FaultVerdict};
pub use replay::ReplayConfig;
pub use stats::{StatsHandle, TransportStats};
pub use wire::{ClusterKey, DropReason};

use relay::{Decoded, EnvelopeRelay, RELAY_TIMEOUT};
use stats::TransportCounters;

/// At most one "wrong cluster secret?" warning per this many ms.
const AUTH_WARN_EVERY_MS: u64 = 10_000;

fn unix_now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Opens [`SecureSocket`]s for chitchat. Cheap to build; keep a
/// [`StatsHandle`] before handing it to chitchat.
pub struct SecureTransport {
    key: ClusterKey,
    replay: ReplayConfig,
    counters: Arc<TransportCounters>,
    faults: Option<FaultInjector>,
    prebound: Mutex<Option<StdUdpSocket>>,
}

impl std::fmt::Debug for SecureTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecureTransport").field("key", &self.key).field("replay", &self.replay).finish()
    }
}

impl SecureTransport {
    pub fn new(key: ClusterKey) -> Self {
        SecureTransport {
            key,
            replay: ReplayConfig::default(),
            counters: Arc::default(),
            faults: None,
            prebound: Mutex::new(None),
        }
    }

    pub fn with_replay_config(mut self, replay: ReplayConfig) -> Self {
        self.replay = replay;
        self
    }

    /// Applies `faults` to every datagram sent (tests).
    pub fn with_fault_injector(mut self, faults: FaultInjector) -> Self {
        self.faults = Some(faults);
        self
    }

    /// Uses an already bound socket for the next `open` at its address, so
    /// that a caller can bind port 0, learn the port, and advertise it.
    pub fn with_bound_socket(self, socket: StdUdpSocket) -> Self {
        *self.prebound.lock().unwrap_or_else(PoisonError::into_inner) = Some(socket);
        self
    }

    pub fn stats(&self) -> TransportStats {
        self.counters.snapshot()
    }

    pub fn stats_handle(&self) -> StatsHandle {
        StatsHandle(self.counters.clone())
    }

    fn take_prebound(&self, addr: SocketAddr) -> Option<StdUdpSocket> {
        let mut slot = self.prebound.lock().unwrap_or_else(PoisonError::into_inner);
        match slot.as_ref().map(StdUdpSocket::local_addr) {
            Some(Ok(bound)) if bound == addr || (addr.port() == 0 && bound.ip() == addr.ip()) => slot.take(),
            _ => None,
        }
    }
}

#[async_trait]
impl Transport for SecureTransport {
    async fn open(&self, listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        let socket = match self.take_prebound(listen_addr) {
            Some(std) => {
                std.set_nonblocking(true).context("gossip socket: set non-blocking")?;
                tokio::net::UdpSocket::from_std(std).context("gossip socket: register with tokio")?
            }
            None => tokio::net::UdpSocket::bind(listen_addr)
                .await
                .with_context(|| format!("cannot bind the gossip socket to {listen_addr}/udp"))?,
        };
        let local_addr = socket.local_addr().context("gossip socket: local address")?;
        Ok(Box::new(SecureSocket {
            socket: Arc::new(socket),
            local_addr,
            sealer: Sealer::new(self.key.clone()),
            opener: Opener::new(self.key.clone(), self.replay),
            relay: EnvelopeRelay::open().await?,
            counters: self.counters.clone(),
            faults: self.faults.clone(),
            recv_buf: vec![0; wire::MAX_DATAGRAM + 1].into_boxed_slice(),
        }))
    }
}

/// One open gossip socket. Owned by chitchat's server task.
pub struct SecureSocket {
    socket: Arc<tokio::net::UdpSocket>,
    local_addr: SocketAddr,
    sealer: Sealer,
    opener: Opener,
    relay: EnvelopeRelay,
    counters: Arc<TransportCounters>,
    faults: Option<FaultInjector>,
    recv_buf: Box<[u8]>,
}

/// Errors after which a UDP socket still works (as chitchat's own socket).
fn is_transient(err: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(err.kind(), OutOfMemory | ConnectionReset | ConnectionRefused | Interrupted | WouldBlock)
}

impl SecureSocket {
    fn log_drop(&self, reason: DropReason, from: SocketAddr, len: usize) {
        self.counters.record_drop(reason);
        if reason.is_auth_failure() && self.counters.auth_warn_due(unix_now_ms(), AUTH_WARN_EVERY_MS) {
            warn!(
                from = %from,
                auth_failures = self.counters.snapshot().auth_failures(),
                "datagram from {from} failed authentication: wrong cluster secret? (further failures are logged at debug for 10 s)"
            );
        } else {
            debug!(from = %from, len, reason = reason.as_str(), "gossip datagram dropped");
        }
    }

    async fn send_datagram(&self, to: SocketAddr, datagram: Vec<u8>) -> anyhow::Result<()> {
        if let Some(faults) = &self.faults {
            match faults.verdict(self.local_addr, to) {
                FaultVerdict::Deliver => {}
                FaultVerdict::Drop => {
                    TransportCounters::add(&self.counters.fault_dropped, 1);
                    return Ok(());
                }
                FaultVerdict::Delay(delay) => {
                    TransportCounters::add(&self.counters.fault_delayed, 1);
                    let (socket, counters) = (self.socket.clone(), self.counters.clone());
                    tokio::spawn(async move {
                        tokio::time::sleep(delay).await;
                        match socket.send_to(&datagram, to).await {
                            Ok(n) => {
                                TransportCounters::add(&counters.datagrams_sent, 1);
                                TransportCounters::add(&counters.bytes_sent, n as u64);
                            }
                            Err(_) => TransportCounters::add(&counters.send_errors, 1),
                        }
                    });
                    return Ok(());
                }
            }
        }
        match self.socket.send_to(&datagram, to).await {
            Ok(n) => {
                TransportCounters::add(&self.counters.datagrams_sent, 1);
                TransportCounters::add(&self.counters.bytes_sent, n as u64);
                Ok(())
            }
            Err(e) => {
                TransportCounters::add(&self.counters.send_errors, 1);
                Err(e).with_context(|| format!("failed to send a gossip datagram to {to}"))
            }
        }
    }

    /// Reads datagrams until one opens into a whole message, which is then
    /// queued in the relay. Cancel-safe: `recv_from` is, and the rest is
    /// synchronous.
    async fn read_one(&mut self) -> anyhow::Result<()> {
        loop {
            let (n, from) = match self.socket.recv_from(&mut self.recv_buf).await {
                Ok(r) => r,
                Err(e) if is_transient(&e) => {
                    debug!(error = %e, "transient gossip socket error");
                    continue;
                }
                Err(e) => return Err(e).context("gossip socket receive failed"),
            };
            TransportCounters::add(&self.counters.datagrams_received, 1);
            TransportCounters::add(&self.counters.bytes_received, n as u64);
            let fed = match self.opener.open(&mut self.recv_buf[..n], from, unix_now_ms()) {
                Ok(Some(message)) => {
                    if matches!(message, std::borrow::Cow::Owned(_)) {
                        TransportCounters::add(&self.counters.messages_joined, 1);
                    }
                    self.relay.feed(from, &message, n)
                }
                Ok(None) => continue,
                Err(reason) => {
                    self.log_drop(reason, from, n);
                    continue;
                }
            };
            if let Err(e) = fed {
                warn!(error = %e, "gossip relay failed; rebuilding it");
                TransportCounters::add(&self.counters.relay_resets, 1);
                self.relay = EnvelopeRelay::open().await?;
                continue;
            }
            return Ok(());
        }
    }
}

#[async_trait]
impl Socket for SecureSocket {
    fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.local_addr)
    }

    async fn send(&mut self, to: SocketAddr, envelope: ChitchatEnvelope) -> anyhow::Result<SendOutcome> {
        let message = match self.relay.encode(envelope).await {
            Ok(m) => m,
            Err(e) => {
                TransportCounters::add(&self.counters.relay_resets, 1);
                self.relay = EnvelopeRelay::open().await?;
                return Err(e);
            }
        };
        let datagrams = match self.sealer.seal(message, unix_now_ms()) {
            Ok(d) => d,
            Err(e) => {
                TransportCounters::add(&self.counters.seal_errors, 1);
                warn!(to = %to, error = %e, "gossip message not sent");
                return Err(e.into());
            }
        };
        if datagrams.len() > 1 {
            TransportCounters::add(&self.counters.messages_split, 1);
        }
        let mut num_bytes_sent = 0;
        for datagram in datagrams {
            num_bytes_sent += datagram.len();
            self.send_datagram(to, datagram).await?;
        }
        Ok(SendOutcome { num_bytes_sent })
    }

    /// Must be cancel-safe (chitchat selects on it against its timer): every
    /// await here is, and state is updated only with a datagram in hand.
    async fn recv(&mut self) -> anyhow::Result<RecvOutcome> {
        loop {
            if self.relay.has_pending() {
                match tokio::time::timeout(RELAY_TIMEOUT, self.relay.next()).await {
                    Ok(Ok(Some(Decoded::Envelope(out)))) => {
                        TransportCounters::add(&self.counters.messages_delivered, 1);
                        return Ok(out);
                    }
                    Ok(Ok(Some(Decoded::Invalid { from }))) => {
                        self.log_drop(DropReason::InvalidPayload, from, 0);
                    }
                    Ok(Ok(None)) => {}
                    Ok(Err(e)) => {
                        warn!(error = %e, "gossip relay out of step; rebuilding it");
                        TransportCounters::add(&self.counters.relay_resets, 1);
                        self.relay = EnvelopeRelay::open().await?;
                    }
                    Err(_elapsed) => {
                        warn!("gossip relay lost a datagram; rebuilding it");
                        TransportCounters::add(&self.counters.relay_resets, 1);
                        self.relay = EnvelopeRelay::open().await?;
                    }
                }
                continue;
            }
            self.read_one().await?;
        }
    }
}
