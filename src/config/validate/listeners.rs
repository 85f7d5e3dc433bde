//! `[[listeners]]` and their `tls` tables.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;

use super::Ctx;
use crate::config::raw::*;
use crate::config::*;

/// Every `[[listeners]]` entry (at least one is needed). A listener whose
/// address is missing or invalid is left out; its error is kept.
pub(super) fn validate_listeners(cx: &mut Ctx, raw: &[RawListener], lp: KeyPath, base: &Path) -> Vec<ListenerConfig> {
    let mut names = HashSet::new();
    let mut binds = HashSet::new();
    let mut listeners = Vec::new();
    if raw.is_empty() {
        cx.err(lp.clone(), "at least one [[listeners]] entry is needed");
    }
    for (i, rl) in raw.iter().enumerate() {
        if let Some(l) = validate_listener(cx, rl, lp.index(i), &mut names, &mut binds, base) {
            listeners.push(l);
        }
    }
    listeners
}

/// One listener: a unique name and address, TLS or a redirect to HTTPS (not
/// both), and the proxies trusted to name the client.
fn validate_listener(
    cx: &mut Ctx,
    rl: &RawListener,
    p: KeyPath,
    names: &mut HashSet<String>,
    binds: &mut HashSet<SocketAddr>,
    base: &Path,
) -> Option<ListenerConfig> {
    let name = cx.name(&rl.name, p.key("name"), "listener", names);
    let bind = listener_bind(cx, rl.bind.as_deref(), p.key("bind"), binds);
    let tls = rl.tls.as_ref().map(|t| validate_tls(cx, t, p.key("tls"), base));
    let redirect_to_https =
        rl.redirect_to_https.map(|_| cx.int(rl.redirect_to_https, p.key("redirect_to_https"), 1, 65535, 443) as u16);
    if redirect_to_https.is_some() && tls.is_some() {
        cx.err(p.key("redirect_to_https"), "only applies to plain-HTTP listeners (this one has tls)");
    }
    if rl.redirect_except.is_some() && redirect_to_https.is_none() {
        cx.err(p.key("redirect_except"), "only applies together with redirect_to_https");
    }
    let trusted_proxies = trusted_proxies(cx, rl.trusted_proxies.iter().flatten(), p.key("trusted_proxies"));
    Some(ListenerConfig {
        name,
        bind: bind?,
        tls,
        redirect_to_https,
        redirect_except: rl.redirect_except.clone().unwrap_or_else(|| vec!["/health".to_string()]),
        accept_proxy_protocol: rl.accept_proxy_protocol.unwrap_or(false),
        trusted_proxies,
    })
}

/// The address a listener binds: an IP literal and a port that no other
/// listener binds (port 0, an ephemeral port, may repeat).
fn listener_bind(
    cx: &mut Ctx,
    bind: Option<&str>,
    path: KeyPath,
    binds: &mut HashSet<SocketAddr>,
) -> Option<SocketAddr> {
    match bind {
        None => {
            cx.err(path, "missing: expected an address such as \"0.0.0.0:80\"");
            None
        }
        Some(b) => match b.parse::<SocketAddr>() {
            Ok(a) => {
                if a.port() != 0 && !binds.insert(a) {
                    cx.err(path, format!("{a} is bound by another listener"));
                }
                Some(a)
            }
            Err(_) => {
                cx.err(path, format!("expected an IP address and port such as \"0.0.0.0:80\", got \"{b}\""));
                None
            }
        },
    }
}

/// `trusted_proxies`: addresses or CIDR blocks; the invalid ones are left
/// out, each with its error.
fn trusted_proxies<'a>(cx: &mut Ctx, list: impl Iterator<Item = &'a String>, path: KeyPath) -> Vec<Cidr> {
    let mut trusted = Vec::new();
    for (j, c) in list.enumerate() {
        match Cidr::parse(c) {
            Some(x) => trusted.push(x),
            None => cx.err(
                path.index(j),
                format!("expected an address or CIDR such as \"10.0.0.0/8\" or \"::1\", got \"{c}\""),
            ),
        }
    }
    trusted
}

/// A listener's `tls` table: certificate files (one pair, or several with
/// the names they serve) or a self-signed certificate, and the protocol
/// versions and cipher suites allowed.
fn validate_tls(cx: &mut Ctx, t: &RawTls, p: KeyPath, base: &Path) -> TlsConfig {
    let certificates = tls_certificates(cx, t, &p, base);
    let self_signed = t.self_signed.unwrap_or(false);
    if self_signed && !certificates.is_empty() {
        cx.err(p.key("self_signed"), "set either self_signed = true or cert/key files, not both");
    }
    if !self_signed && certificates.is_empty() {
        cx.err(p.clone(), "missing: set cert and key (PEM files), or self_signed = true");
    }
    if t.hosts.is_some() && !self_signed {
        cx.err(p.key("hosts"), "only applies with self_signed = true");
    }
    let protocols = t.protocols.clone().unwrap_or_default();
    if let Err(e) = crate::tls::parse_protocols(&protocols) {
        cx.err(p.key("protocols"), e.to_string());
    }
    let ciphers = t.ciphers.clone().unwrap_or_default();
    if let Err(e) = crate::tls::parse_cipher_suites(&ciphers) {
        cx.err(p.key("ciphers"), e.to_string());
    }
    TlsConfig {
        certificates,
        self_signed: self_signed.then(|| t.hosts.clone().unwrap_or_else(|| vec!["localhost".to_string()])),
        protocols,
        ciphers,
    }
}

/// The certificate files of a `tls` table: `cert` and `key`, then each
/// `[[certificates]]` entry; a file named without its pair is an error.
fn tls_certificates(cx: &mut Ctx, t: &RawTls, p: &KeyPath, base: &Path) -> Vec<CertificateConfig> {
    let mut certificates = Vec::new();
    match (&t.cert, &t.key) {
        (Some(c), Some(k)) => {
            certificates.push(CertificateConfig { cert: base.join(c), key: base.join(k), names: Vec::new() })
        }
        (None, None) => {}
        (Some(_), None) => cx.err(p.key("key"), "missing: cert needs its key"),
        (None, Some(_)) => cx.err(p.key("cert"), "missing: key needs its cert"),
    }
    for (j, rc) in t.certificates.iter().enumerate() {
        let cp = p.key("certificates").index(j);
        match (&rc.cert, &rc.key) {
            (Some(c), Some(k)) => certificates.push(CertificateConfig {
                cert: base.join(c),
                key: base.join(k),
                names: rc.names.clone().unwrap_or_default(),
            }),
            _ => cx.err(cp, "each certificate needs cert and key"),
        }
    }
    certificates
}
