//! The new process's side of the hand-over (see the module above for the
//! order). Connected before anything else happens, so that even a config
//! that does not load is reported to the old node.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::mpsc;

use super::wire::{self, ToNew, ToOld};
use super::Inherited;
use crate::sessions::SessionRecord;

/// How long the old node may take to release the store or the cluster.
const REPLY_WAIT: Duration = Duration::from_secs(30);

/// The link to the old node, held by the new process until it exits.
pub struct Successor {
    writer: Mutex<UnixStream>,
    replies: tokio::sync::Mutex<mpsc::UnboundedReceiver<ToNew>>,
    records: Mutex<Option<mpsc::UnboundedReceiver<SessionRecord>>>,
    inherited: Mutex<Option<Inherited>>,
    pub old_pid: u32,
    pub old_version: String,
}

impl Successor {
    /// Connects to the old node's hand-over socket and receives the
    /// sockets. Blocking; runs before the async runtime exists.
    pub fn connect(path: &Path) -> std::io::Result<Successor> {
        let stream = UnixStream::connect(path)
            .map_err(|e| std::io::Error::new(e.kind(), format!("hand-over socket {}: {e}", path.display())))?;
        stream.set_read_timeout(Some(REPLY_WAIT))?;
        let (sockets, old_pid, old_version) = wire::recv_sockets(&stream)?;
        stream.set_read_timeout(None)?;
        tracing::info!(
            old_pid,
            old_version,
            sockets = sockets.len(),
            "upgrade: sockets received from the running node"
        );
        let (reply_tx, replies) = mpsc::unbounded_channel();
        let (record_tx, records) = mpsc::unbounded_channel();
        let reader = BufReader::new(stream.try_clone()?);
        std::thread::Builder::new().name("upgrade-link".into()).spawn(move || {
            for line in reader.lines() {
                let Ok(line) = line else { break };
                match wire::parse::<ToNew>(&line) {
                    Ok(ToNew::Record(r)) => {
                        let _ = record_tx.send(r);
                    }
                    Ok(other) => {
                        let _ = reply_tx.send(other);
                    }
                    Err(e) => {
                        tracing::error!("upgrade: {e}");
                        break;
                    }
                }
            }
            // The old node exited (or the link broke): nothing more comes.
        })?;
        Ok(Successor {
            writer: Mutex::new(stream),
            replies: tokio::sync::Mutex::new(replies),
            records: Mutex::new(Some(records)),
            inherited: Mutex::new(Some(Inherited::new(sockets))),
            old_pid,
            old_version,
        })
    }

    /// The sockets received (once).
    pub fn take_inherited(&self) -> Inherited {
        self.inherited.lock().unwrap_or_else(|e| e.into_inner()).take().unwrap_or_default()
    }

    /// Tells the old node why this process cannot start; it keeps serving.
    pub fn fail(&self, error: &str) {
        if let Err(e) = self.send(&ToOld::Failed { error: error.to_string() }) {
            tracing::warn!("upgrade: cannot tell the old node why this process stops: {e}");
        }
    }

    /// Asks for the session store and waits until the old node closed it;
    /// returns the old node's server states, to take over.
    pub async fn release_store(&self) -> anyhow::Result<Vec<crate::health::server::Carried>> {
        match self.ask(ToOld::ReleaseStore).await? {
            ToNew::StoreReleased { servers } => Ok(servers),
            other => anyhow::bail!("upgrade: asked for the store, the old node answered {other:?}"),
        }
    }

    /// Asks for the cluster and waits until the old node stopped gossip.
    pub async fn release_cluster(&self) -> anyhow::Result<()> {
        match self.ask(ToOld::ReleaseCluster).await? {
            ToNew::ClusterReleased => Ok(()),
            other => anyhow::bail!("upgrade: asked for the cluster, the old node answered {other:?}"),
        }
    }

    /// This process accepts connections: the old one stops.
    pub fn ready(&self) -> std::io::Result<()> {
        self.send(&ToOld::Ready { pid: std::process::id(), version: env!("CARGO_PKG_VERSION").to_string() })
    }

    /// Session records the old node writes after it released the store, in
    /// order (once).
    pub fn take_records(&self) -> Option<mpsc::UnboundedReceiver<SessionRecord>> {
        self.records.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    async fn ask(&self, request: ToOld) -> anyhow::Result<ToNew> {
        self.send(&request)?;
        let mut replies = self.replies.lock().await;
        match tokio::time::timeout(REPLY_WAIT, replies.recv()).await {
            Ok(Some(reply)) => Ok(reply),
            Ok(None) => anyhow::bail!("upgrade: the old node closed the hand-over socket (asked {request:?})"),
            Err(_) => anyhow::bail!("upgrade: the old node did not answer {request:?} within {REPLY_WAIT:?}"),
        }
    }

    fn send(&self, msg: &ToOld) -> std::io::Result<()> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner()).write_all(&wire::line(msg))
    }
}
