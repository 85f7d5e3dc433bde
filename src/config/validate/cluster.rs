//! `[cluster]`: gossip with peers.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{parse_addr, Ctx};
use crate::config::raw::*;
use crate::config::*;

/// The `[cluster]` table: where this node gossips and is reached, the
/// seeds it joins through, the shared secret (read now) and the gossip
/// interval.
pub(super) fn validate_cluster(cx: &mut Ctx, rc: &RawCluster, p: KeyPath, base: &Path) -> ClusterSettings {
    let (listen, advertise) = cluster_addresses(cx, rc, &p);
    let seeds = cluster_seeds(cx, rc.seeds.iter().flatten(), p.key("seeds"));
    let (secret_file, secret) = cluster_secret(cx, rc.secret_file.as_deref(), p.key("secret_file"), base);
    let gossip_interval = cx.duration(&rc.gossip_interval, p.key("gossip_interval"), Duration::from_millis(500));
    if !(Duration::from_millis(10)..=Duration::from_secs(60)).contains(&gossip_interval) {
        cx.err(p.key("gossip_interval"), format!("must be 10ms..=60s, got {gossip_interval:?}"));
    }
    // Without a valid secret the config is refused, so a placeholder is fine.
    let secret = secret.unwrap_or_else(|| {
        crate::cluster::ClusterSecret::from_bytes(b"placeholder-0123456789abcdefghijklmnop")
            .expect("the placeholder is a valid secret")
    });
    ClusterSettings { listen, advertise, seeds, secret_file, secret, gossip_interval }
}

/// `listen` (all interfaces, port 7946, by default) and `advertise`, the
/// address peers reach this node at: needed when `listen` is a wildcard,
/// and never a wildcard itself.
fn cluster_addresses(cx: &mut Ctx, rc: &RawCluster, p: &KeyPath) -> (SocketAddr, Option<SocketAddr>) {
    let addr = |cx: &mut Ctx, v: &str, key: &str| match parse_addr(v) {
        Ok(a) => Some(a),
        Err(e) => {
            cx.err(p.key(key), e);
            None
        }
    };
    let listen = match rc.listen.as_deref() {
        None => SocketAddr::from(([0, 0, 0, 0], 7946)),
        Some(v) => addr(cx, v, "listen").unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 7946))),
    };
    let advertise = rc.advertise.as_deref().and_then(|v| addr(cx, v, "advertise"));
    match advertise {
        Some(a) if a.ip().is_unspecified() || a.port() == 0 => {
            cx.err(p.key("advertise"), format!("must be an address peers can reach (not {a})"))
        }
        None if listen.ip().is_unspecified() => cx.err(
            p.key("advertise"),
            format!(
                "listen = \"{listen}\" is a wildcard address: set advertise to the IP:port peers reach this node at"
            ),
        ),
        _ => {}
    }
    (listen, advertise)
}

/// `seeds`: `host:port` of peers' cluster listeners, kept as text (they are
/// resolved when joining); the invalid ones are left out, each with its
/// error.
fn cluster_seeds<'a>(cx: &mut Ctx, list: impl Iterator<Item = &'a String>, sp: KeyPath) -> Vec<String> {
    let mut seeds = Vec::new();
    for (i, seed) in list.enumerate() {
        let seed = seed.trim();
        match seed.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0) => {
                seeds.push(seed.to_string())
            }
            _ => cx.err(
                sp.index(i),
                format!("expected host:port of a peer's cluster listener such as \"10.0.1.11:7946\", got \"{seed}\""),
            ),
        }
    }
    seeds
}

/// `secret_file` (required) and the secret read from it now; `None` when
/// it is missing or invalid (the error is kept), or when the path is empty.
fn cluster_secret(
    cx: &mut Ctx,
    file: Option<&str>,
    path: KeyPath,
    base: &Path,
) -> (PathBuf, Option<crate::cluster::ClusterSecret>) {
    let Some(f) = file else {
        cx.err(path, "is required: every node of a cluster reads the same secret (`sysmanage-node init` writes one)");
        return (PathBuf::new(), None);
    };
    let secret_file = base.join(f);
    if secret_file.as_os_str().is_empty() {
        return (secret_file, None);
    }
    match crate::cluster::load_secret(&secret_file) {
        Ok(s) => (secret_file, Some(s)),
        Err(e) => {
            cx.err(path, e.to_string());
            (secret_file, None)
        }
    }
}
