//! TLS test helpers: self-signed certificates written into a temp dir,
//! rustls client configs (aws-lc-rs), handshakes with the node, and HTTP/1.1
//! or HTTP/2 requests over the TLS stream with hyper's connection API.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::version::{TLS12, TLS13};
use rustls::{ClientConfig, RootCertStore, SupportedProtocolVersion};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use sysmanage_node::tls::{generate_self_signed, load_cert_chain, InsecureSkipVerify};

pub const BOTH: &[&SupportedProtocolVersion] = &[&TLS13, &TLS12];
pub const ONLY_12: &[&SupportedProtocolVersion] = &[&TLS12];
pub const ONLY_13: &[&SupportedProtocolVersion] = &[&TLS13];

/// A certificate and key on disk, and the certificate's DER.
#[derive(Clone)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub der: CertificateDer<'static>,
}

impl CertFiles {
    /// `tls = { cert = "...", key = "..." }` for a listener.
    pub fn inline(&self) -> String {
        format!("cert = \"{}\", key = \"{}\"", self.cert.display(), self.key.display())
    }

    /// The certificate's serial number, as x509-parser reads it.
    pub fn serial(&self) -> Vec<u8> {
        serial_of(&self.der)
    }
}

pub fn serial_of(der: &CertificateDer<'_>) -> Vec<u8> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).expect("valid X.509");
    cert.tbs_certificate.raw_serial().to_vec()
}

/// Generates a self-signed certificate for `names` into `dir/stem.crt` and
/// `dir/stem.key`, replacing existing files by rename (as renewal tools do).
pub fn write_cert(dir: &Path, stem: &str, names: &[&str]) -> CertFiles {
    sysmanage_node::tls::install_crypto_provider();
    let hosts: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let (cert_pem, key_pem) = generate_self_signed(&hosts).expect("self-signed certificate");
    let cert = dir.join(format!("{stem}.crt"));
    let key = dir.join(format!("{stem}.key"));
    for (path, pem) in [(&key, &key_pem), (&cert, &cert_pem)] {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, pem).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }
    let der = load_cert_chain(&cert).expect("written certificate loads").remove(0);
    CertFiles { cert, key, der }
}

fn builder(
    versions: &[&'static SupportedProtocolVersion],
) -> rustls::ConfigBuilder<ClientConfig, rustls::WantsVerifier> {
    sysmanage_node::tls::install_crypto_provider();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    ClientConfig::builder_with_provider(provider).with_protocol_versions(versions).expect("valid versions")
}

/// A client trusting exactly `trusted`, speaking `versions`, offering `alpn`.
/// Each call has its own session cache, so it never resumes another
/// client's session.
pub fn client_trusting(
    trusted: &[&CertFiles],
    versions: &[&'static SupportedProtocolVersion],
    alpn: &[&[u8]],
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for c in trusted {
        roots.add(c.der.clone()).expect("trust anchor");
    }
    let mut config = builder(versions).with_root_certificates(roots).with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// A client that accepts any certificate: for looking at what the server
/// presents when that would not verify (an unknown SNI name).
pub fn client_accepting_any(alpn: &[&[u8]]) -> Arc<ClientConfig> {
    let mut config = builder(BOTH)
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(InsecureSkipVerify::new()))
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// A TLS handshake with the node, bounded by 5 s.
pub async fn tls_connect(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    sni: &str,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(sni.to_owned()).expect("valid server name");
    tokio::time::timeout(Duration::from_secs(5), TlsConnector::from(config).connect(name, tcp))
        .await
        .expect("TLS handshake timed out")
}

/// The leaf certificate the server presented.
pub fn peer_leaf(tls: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    tls.get_ref().1.peer_certificates().expect("server sent certificates")[0].clone().into_owned()
}

pub fn alpn(tls: &TlsStream<TcpStream>) -> Option<Vec<u8>> {
    tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec)
}

pub fn tls_version(tls: &TlsStream<TcpStream>) -> Option<rustls::ProtocolVersion> {
    tls.get_ref().1.protocol_version()
}

/// One HTTP connection over an established TLS stream, HTTP/1.1 or HTTP/2.
pub enum HttpConn {
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

impl HttpConn {
    pub async fn http1(tls: TlsStream<TcpStream>) -> HttpConn {
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.expect("HTTP/1.1 handshake");
        tokio::spawn(conn);
        HttpConn::H1(send)
    }

    pub async fn http2(tls: TlsStream<TcpStream>) -> HttpConn {
        let (send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await.expect("h2 handshake");
        tokio::spawn(conn);
        HttpConn::H2(send)
    }

    /// GET `path` with `Host: host` (HTTP/1.1) or `:authority` (HTTP/2);
    /// status, version, headers and body, bounded by 5 s.
    pub async fn get(&mut self, host: &str, path: &str) -> (StatusCode, Version, HeaderMap, String) {
        let fut = async {
            let resp = match self {
                HttpConn::H1(s) => {
                    let req = Request::get(path).header("host", host).body(Full::new(Bytes::new())).unwrap();
                    s.ready().await.expect("connection open");
                    s.send_request(req).await
                }
                HttpConn::H2(s) => {
                    let req = Request::get(format!("https://{host}{path}")).body(Full::new(Bytes::new())).unwrap();
                    s.ready().await.expect("connection open");
                    s.send_request(req).await
                }
            }
            .expect("response from the node");
            let (status, version, headers) = (resp.status(), resp.version(), resp.headers().clone());
            let body = resp.into_body().collect().await.expect("body").to_bytes();
            (status, version, headers, String::from_utf8_lossy(&body).into_owned())
        };
        tokio::time::timeout(Duration::from_secs(5), fut).await.expect("request timed out")
    }
}
