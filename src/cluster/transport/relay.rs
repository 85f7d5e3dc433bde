//! Chitchat envelope ⇄ bytes, through chitchat's own UDP socket on loopback.
//!
//! # Why a relay
//!
//! chitchat 0.13's `Transport` trait hands a transport `ChitchatEnvelope`
//! values, but the envelope's `serialize`/`deserialize` are `pub(crate)`:
//! an outside transport cannot turn one into bytes or back. The only public
//! code that does is chitchat's own `UdpSocket`. So each [`EnvelopeRelay`]
//! owns one such socket (`codec`) bound to `127.0.0.1:0` plus two plain
//! sockets connected to it:
//!
//! - encode: `codec.send(tap, envelope)` puts the exact chitchat bytes on
//!   loopback; `tap` reads them and the caller seals them;
//! - decode: after a datagram is authenticated, `feeder` sends the plaintext
//!   and then a *sentinel* (a SYN for a random, never-used cluster id) to
//!   `codec`, whose `recv` parses them. What arrives before the sentinel is
//!   the decoded envelope; a sentinel alone means chitchat rejected the
//!   payload. The sentinel keeps the pairing of decoded envelopes with their
//!   real senders exact even when chitchat silently drops invalid input.
//!
//! Plaintext never leaves the host's loopback, and `codec` ignores anything
//! that does not come from `feeder` (another local process cannot inject).
//! The cost is a few loopback syscalls per gossip message, i.e. nothing at
//! gossip rates. If chitchat ever exposes its envelope codec, this module
//! becomes two function calls. `feeder` is a blocking std socket on purpose:
//! its two sends cannot be split by task cancellation (a loopback UDP send
//! does not block).

use std::collections::VecDeque;
use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
use std::time::Duration;

use anyhow::{bail, Context};
use chitchat::transport::{RecvOutcome, Socket, UdpSocket as ChitchatUdpSocket};
use chitchat::{ChitchatEnvelope, ChitchatMessage, ProtocolVersion};

use super::wire::MAX_DATAGRAM;

/// Longest wait for a loopback datagram that must already be queued; past
/// it the relay is considered out of step and rebuilt.
pub(crate) const RELAY_TIMEOUT: Duration = Duration::from_secs(1);

/// What the relay produced for one fed message.
pub(crate) enum Decoded {
    Envelope(RecvOutcome),
    /// Chitchat could not parse the authenticated payload from this peer.
    Invalid {
        from: SocketAddr,
    },
}

struct Pending {
    from: SocketAddr,
    wire_len: usize,
    delivered: bool,
}

pub(crate) struct EnvelopeRelay {
    codec: ChitchatUdpSocket,
    tap: tokio::net::UdpSocket,
    tap_addr: SocketAddr,
    feeder: StdUdpSocket,
    feeder_addr: SocketAddr,
    sentinel_cluster_id: String,
    sentinel_bytes: Vec<u8>,
    pending: VecDeque<Pending>,
    buf: Vec<u8>,
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

impl EnvelopeRelay {
    pub(crate) async fn open() -> anyhow::Result<Self> {
        let codec = ChitchatUdpSocket::open(loopback()).await.context("gossip relay: codec socket")?;
        let codec_addr = codec.local_addr()?;
        let tap = tokio::net::UdpSocket::bind(loopback()).await.context("gossip relay: tap socket")?;
        tap.connect(codec_addr).await.context("gossip relay: connect tap")?;
        let tap_addr = tap.local_addr()?;
        let feeder = StdUdpSocket::bind(loopback()).context("gossip relay: feeder socket")?;
        feeder.connect(codec_addr).context("gossip relay: connect feeder")?;
        let feeder_addr = feeder.local_addr()?;
        let mut id = [0u8; 16];
        getrandom::fill(&mut id).map_err(|e| anyhow::anyhow!("gossip relay: random sentinel: {e}"))?;
        let sentinel_cluster_id = format!("sysmanage-node relay sentinel {}", u128::from_be_bytes(id));
        let mut relay = EnvelopeRelay {
            codec,
            tap,
            tap_addr,
            feeder,
            feeder_addr,
            sentinel_cluster_id,
            sentinel_bytes: Vec::new(),
            pending: VecDeque::new(),
            buf: vec![0; MAX_DATAGRAM + 1],
        };
        let sentinel = relay.sentinel();
        relay.sentinel_bytes = relay.encode(sentinel).await?.to_vec();
        Ok(relay)
    }

    fn sentinel(&self) -> ChitchatEnvelope {
        ChitchatEnvelope {
            version: ProtocolVersion::V0,
            message: ChitchatMessage::Syn { cluster_id: self.sentinel_cluster_id.clone(), digest: Default::default() },
        }
    }

    fn is_sentinel(&self, envelope: &ChitchatEnvelope) -> bool {
        matches!(&envelope.message, ChitchatMessage::Syn { cluster_id, .. } if *cluster_id == self.sentinel_cluster_id)
    }

    /// Serializes an envelope exactly as chitchat would put it on the wire.
    pub(crate) async fn encode(&mut self, envelope: ChitchatEnvelope) -> anyhow::Result<&[u8]> {
        self.codec.send(self.tap_addr, envelope).await.context("gossip relay: encode")?;
        let n = tokio::time::timeout(RELAY_TIMEOUT, self.tap.recv(&mut self.buf))
            .await
            .context("gossip relay: encoded message did not arrive")?
            .context("gossip relay: tap recv")?;
        if n > MAX_DATAGRAM {
            bail!("gossip relay: chitchat produced a message of {n} bytes");
        }
        Ok(&self.buf[..n])
    }

    /// Queues an authenticated plaintext from `from` for decoding.
    pub(crate) fn feed(&mut self, from: SocketAddr, plaintext: &[u8], wire_len: usize) -> anyhow::Result<()> {
        self.pending.push_back(Pending { from, wire_len, delivered: false });
        self.feeder.send(plaintext).context("gossip relay: feed")?;
        self.feeder.send(&self.sentinel_bytes).context("gossip relay: feed sentinel")?;
        Ok(())
    }

    pub(crate) fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// The next decoded message, or `None` once every fed message has been
    /// accounted for. Cancel-safe: state changes only after an awaited
    /// datagram is in hand.
    pub(crate) async fn next(&mut self) -> anyhow::Result<Option<Decoded>> {
        loop {
            if self.pending.is_empty() {
                return Ok(None);
            }
            let out = self.codec.recv().await?;
            if out.from_addr != self.feeder_addr {
                continue;
            }
            if self.is_sentinel(&out.envelope) {
                let done = self.pending.pop_front().expect("pending is not empty");
                if !done.delivered {
                    return Ok(Some(Decoded::Invalid { from: done.from }));
                }
                continue;
            }
            let front = self.pending.front_mut().expect("pending is not empty");
            if front.delivered {
                // Two envelopes before one sentinel cannot come from one
                // datagram; the relay is out of step.
                bail!("gossip relay: out of step");
            }
            front.delivered = true;
            return Ok(Some(Decoded::Envelope(RecvOutcome {
                from_addr: front.from,
                envelope: out.envelope,
                num_bytes_received: front.wire_len,
            })));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn syn(cluster: &str) -> ChitchatEnvelope {
        ChitchatEnvelope {
            version: ProtocolVersion::V0,
            message: ChitchatMessage::Syn { cluster_id: cluster.to_string(), digest: Default::default() },
        }
    }

    #[tokio::test]
    async fn encodes_and_decodes_in_order_with_senders() {
        let mut r = EnvelopeRelay::open().await.unwrap();
        let a: SocketAddr = "127.0.0.9:1".parse().unwrap();
        let b: SocketAddr = "127.0.0.9:2".parse().unwrap();
        let bytes_a = r.encode(syn("cluster-a")).await.unwrap().to_vec();
        let bytes_b = r.encode(syn("cluster-b")).await.unwrap().to_vec();
        r.feed(a, &bytes_a, 100).unwrap();
        r.feed(b, b"not chitchat at all", 50).unwrap();
        r.feed(b, &bytes_b, 200).unwrap();
        let Some(Decoded::Envelope(out)) = r.next().await.unwrap() else { panic!("a should decode") };
        assert_eq!((out.from_addr, out.num_bytes_received), (a, 100));
        assert_eq!(out.envelope, syn("cluster-a"));
        let Some(Decoded::Invalid { from }) = r.next().await.unwrap() else { panic!("junk should be invalid") };
        assert_eq!(from, b);
        let Some(Decoded::Envelope(out)) = r.next().await.unwrap() else { panic!("b should decode") };
        assert_eq!((out.from_addr, out.envelope), (b, syn("cluster-b")));
        assert!(r.has_pending(), "b's sentinel is still queued");
        assert!(r.next().await.unwrap().is_none());
        assert!(!r.has_pending());
    }

    #[tokio::test]
    async fn injected_plaintext_from_other_sockets_is_ignored() {
        let mut r = EnvelopeRelay::open().await.unwrap();
        let codec_addr = r.codec.local_addr().unwrap();
        let real = r.encode(syn("real")).await.unwrap().to_vec();
        let forged = r.encode(syn("forged")).await.unwrap().to_vec();
        let intruder = StdUdpSocket::bind(loopback()).unwrap();
        intruder.send_to(&forged, codec_addr).unwrap();
        let peer: SocketAddr = "127.0.0.9:3".parse().unwrap();
        r.feed(peer, &real, 10).unwrap();
        let Some(Decoded::Envelope(out)) = r.next().await.unwrap() else { panic!() };
        assert_eq!(out.envelope, syn("real"));
    }
}
