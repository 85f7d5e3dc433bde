//! The old node's side of the hand-over: starts the new process, answers
//! it, and reports how it went. The node's own parts (its store, its
//! cluster, its listeners) are released by the caller, in
//! [`crate::runtime`], as the new process asks.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

use super::wire::{self, ToNew, ToOld};
use super::{Handed, UpgradeError};

/// How long the new process may take to connect.
const CONNECT_WAIT: Duration = Duration::from_secs(10);

/// What the new process is started from: the binary at the path this
/// process was started from (a package upgrade replaced it), with the same
/// arguments.
#[derive(Debug, Clone)]
pub struct Launch {
    pub binary: PathBuf,
    pub args: Vec<std::ffi::OsString>,
}

impl Launch {
    /// This process's binary and arguments, read at start (later the path
    /// may name a new file, which is the point).
    pub fn of_this_process() -> Launch {
        let binary = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"));
        Launch { binary, args: std::env::args_os().skip(1).collect() }
    }
}

/// A started new process and the link to it.
pub struct Link {
    pub child: Child,
    pub pid: u32,
    lines: tokio::io::Lines<BufReader<OwnedReadHalf>>,
    out: mpsc::UnboundedSender<ToNew>,
    socket_path: PathBuf,
}

impl Link {
    /// Starts the new process, waits for it to connect to the hand-over
    /// socket in `data_dir` and sends it `sockets`.
    pub async fn start(data_dir: &Path, launch: &Launch, sockets: &[&Handed]) -> Result<Link, UpgradeError> {
        let socket_path = super::socket_path(data_dir);
        let sock_err = |error| UpgradeError::Socket { path: socket_path.display().to_string(), error };
        let _ = std::fs::remove_file(&socket_path);
        let listener = UnixListener::bind(&socket_path).map_err(sock_err)?;
        let mut child = Command::new(&launch.binary)
            .args(&launch.args)
            .env(super::SOCKET_ENV, &socket_path)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(false)
            .spawn()
            .map_err(|error| UpgradeError::Spawn { binary: launch.binary.display().to_string(), error })?;
        let pid = child.id().unwrap_or(0);
        tracing::info!(binary = %launch.binary.display(), pid, "upgrade: new process started");
        let accepted = tokio::select! {
            r = tokio::time::timeout(CONNECT_WAIT, accept_from(&listener, pid)) => match r {
                Ok(r) => r.map_err(sock_err),
                Err(_) => Err(UpgradeError::Timeout(CONNECT_WAIT)),
            },
            status = child.wait() => Err(UpgradeError::Exited(describe(status))),
        };
        // Nobody else connects once the new process has.
        drop(listener);
        let _ = std::fs::remove_file(&socket_path);
        let stream = match accepted {
            Ok(s) => s,
            Err(e) => {
                let _ = child.start_kill();
                return Err(e);
            }
        };
        // The sockets go with one blocking `sendmsg`.
        let std_stream = stream.into_std().map_err(sock_err)?;
        std_stream.set_nonblocking(false).map_err(sock_err)?;
        wire::send_sockets(&std_stream, sockets, std::process::id()).map_err(sock_err)?;
        std_stream.set_nonblocking(true).map_err(sock_err)?;
        let stream = UnixStream::from_std(std_stream).map_err(sock_err)?;
        let (read, write) = stream.into_split();
        let (out, rx) = mpsc::unbounded_channel();
        tokio::spawn(write_lines(write, rx));
        Ok(Link { child, pid, lines: BufReader::new(read).lines(), out, socket_path })
    }

    /// The next message from the new process; its exit or a closed link is
    /// an error.
    pub async fn next(&mut self) -> Result<ToOld, UpgradeError> {
        match next_heard(&mut self.lines, self.child.wait()).await {
            Heard::Line(l) => wire::parse::<ToOld>(&l).map_err(UpgradeError::Failed),
            Heard::Closed => Err(self.exited().await),
            Heard::Exited(status) => Err(UpgradeError::Exited(status)),
            Heard::Broken(e) => Err(UpgradeError::Socket { path: self.socket_path.display().to_string(), error: e }),
        }
    }

    /// Queues a message to the new process (sent in order).
    pub fn send(&self, msg: ToNew) {
        let _ = self.out.send(msg);
    }

    /// A sender that forwards session records to the new process.
    pub fn records(&self) -> mpsc::UnboundedSender<crate::sessions::SessionRecord> {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let out = self.out.clone();
        tokio::spawn(async move {
            while let Some(r) = rx.recv().await {
                if out.send(ToNew::Record(r)).is_err() {
                    break;
                }
            }
        });
        tx
    }

    /// After the link closed: how the process ended, waiting a moment for it.
    async fn exited(&mut self) -> UpgradeError {
        match tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await {
            Ok(status) => UpgradeError::Exited(describe(status)),
            Err(_) => UpgradeError::Failed("the new process closed the hand-over socket".into()),
        }
    }

    /// Stops a new process that is not wanted any more.
    pub async fn abandon(mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
    }
}

/// What the new process said or did next.
#[derive(Debug)]
enum Heard {
    Line(String),
    /// It closed the link; whether it exited is asked separately.
    Closed,
    /// It exited with nothing more to say.
    Exited(String),
    Broken(std::io::Error),
}

/// The next line from the new process, or its exit. Once it has exited,
/// the lines it wrote before it ended are still read for its failure: a
/// process that reports why it fails and exits (a config it rejects) must
/// be reported by its words, not only by its exit status, whichever of the
/// two events the runtime sees first. Any other request of a process known
/// to have exited (to release the store or the cluster) is not acted on.
async fn next_heard<R>(
    lines: &mut tokio::io::Lines<R>,
    exit: impl std::future::Future<Output = std::io::Result<std::process::ExitStatus>>,
) -> Heard
where
    R: tokio::io::AsyncBufRead + Unpin,
{
    let heard = |line: std::io::Result<Option<String>>| match line {
        Ok(Some(l)) => Heard::Line(l),
        Ok(None) => Heard::Closed,
        Err(e) => Heard::Broken(e),
    };
    tokio::select! {
        // The exit first: a process known to have ended is asked only for
        // its failure, whatever else it wrote.
        biased;
        status = exit => {
            // The process has ended, so the link reaches its end at once
            // unless something else holds it; a bound keeps that case finite.
            let failure = async {
                while let Ok(Some(l)) = lines.next_line().await {
                    if matches!(wire::parse::<ToOld>(&l), Ok(ToOld::Failed { .. })) {
                        return Some(l);
                    }
                }
                None
            };
            match tokio::time::timeout(LAST_WORDS_WAIT, failure).await {
                Ok(Some(l)) => Heard::Line(l),
                _ => Heard::Exited(describe(status)),
            }
        }
        // `next_line` is cancel safe: a partial line stays buffered.
        line = lines.next_line() => heard(line),
    }
}

/// How long the lines an exited new process wrote are waited for.
const LAST_WORDS_WAIT: Duration = Duration::from_secs(1);

/// Accepts the connection of process `pid` (checked with `SO_PEERCRED`);
/// others are closed.
async fn accept_from(listener: &UnixListener, pid: u32) -> std::io::Result<UnixStream> {
    loop {
        let (stream, _) = listener.accept().await?;
        match rustix::net::sockopt::socket_peercred(&stream) {
            Ok(cred) if cred.pid.as_raw_nonzero().get() as u32 == pid => return Ok(stream),
            Ok(cred) => tracing::warn!(
                peer_pid = cred.pid.as_raw_nonzero().get(),
                "upgrade: a process other than the new one connected to the hand-over socket; closed"
            ),
            Err(e) => tracing::warn!("upgrade: cannot tell who connected to the hand-over socket ({e}); closed"),
        }
    }
}

async fn write_lines(mut write: OwnedWriteHalf, mut rx: mpsc::UnboundedReceiver<ToNew>) {
    while let Some(msg) = rx.recv().await {
        if write.write_all(&wire::line(&msg)).await.is_err() {
            break;
        }
    }
}

fn describe(status: std::io::Result<std::process::ExitStatus>) -> String {
    match status {
        Ok(s) => s.to_string(),
        Err(e) => format!("cannot wait for it: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;
    use std::process::ExitStatus;

    fn failed_line() -> Vec<u8> {
        wire::line(&ToOld::Failed { error: "max_connections: not a number".into() })
    }

    #[tokio::test]
    async fn words_written_before_an_exit_seen_first_are_still_read() {
        // The exit is seen while the line is not yet readable: the line it
        // wrote arrives afterwards and is what gets reported.
        let (reader, mut writer) = tokio::io::duplex(1024);
        let mut lines = BufReader::new(reader).lines();
        let exit = async move {
            writer.write_all(&failed_line()).await.unwrap();
            drop(writer);
            Ok(ExitStatus::from_raw(1 << 8))
        };
        match next_heard(&mut lines, exit).await {
            Heard::Line(l) => {
                let msg = wire::parse::<ToOld>(&l).unwrap();
                assert!(matches!(&msg, ToOld::Failed { error } if error.contains("max_connections")), "{msg:?}");
            }
            other => panic!("expected the failure line, got {other:?}"),
        }
        // Then the link ends.
        assert!(matches!(next_heard(&mut lines, std::future::pending()).await, Heard::Closed));
    }

    #[tokio::test]
    async fn after_an_exit_only_its_failure_is_read_not_its_requests() {
        // It asked for the store, then wrote why it failed, then exited:
        // the failure is reported; a request alone gives the exit.
        let (reader, mut writer) = tokio::io::duplex(1024);
        let mut lines = BufReader::new(reader).lines();
        let exit = async move {
            writer.write_all(&wire::line(&ToOld::ReleaseStore)).await.unwrap();
            writer.write_all(&failed_line()).await.unwrap();
            drop(writer);
            Ok(ExitStatus::from_raw(1 << 8))
        };
        match next_heard(&mut lines, exit).await {
            Heard::Line(l) => assert!(matches!(wire::parse::<ToOld>(&l), Ok(ToOld::Failed { .. })), "{l}"),
            other => panic!("expected the failure line, got {other:?}"),
        }
        let (reader, mut writer) = tokio::io::duplex(1024);
        let mut lines = BufReader::new(reader).lines();
        let exit = async move {
            writer.write_all(&wire::line(&ToOld::ReleaseStore)).await.unwrap();
            drop(writer);
            Ok(ExitStatus::from_raw(1 << 8))
        };
        match next_heard(&mut lines, exit).await {
            Heard::Exited(status) => assert_eq!(status, "exit status: 1"),
            other => panic!("expected the exit, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_line_and_an_exit_ready_together_give_the_line() {
        let bytes = failed_line();
        let mut lines = BufReader::new(&bytes[..]).lines();
        let heard = next_heard(&mut lines, std::future::ready(Ok(ExitStatus::from_raw(1 << 8)))).await;
        assert!(matches!(heard, Heard::Line(_)), "{heard:?}");
    }

    #[tokio::test]
    async fn an_exit_with_nothing_said_is_reported_by_its_status() {
        let (reader, writer) = tokio::io::duplex(64);
        let mut lines = BufReader::new(reader).lines();
        let exit = async move {
            drop(writer);
            Ok(ExitStatus::from_raw(1 << 8))
        };
        match next_heard(&mut lines, exit).await {
            Heard::Exited(status) => assert_eq!(status, "exit status: 1"),
            other => panic!("expected the exit, got {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_exit_whose_link_stays_open_is_reported_within_a_bound() {
        // Something else holds the link open (a grandchild): the exit is
        // reported once the bound passes, not never.
        let (reader, _writer) = tokio::io::duplex(64);
        let mut lines = BufReader::new(reader).lines();
        let heard = next_heard(&mut lines, std::future::ready(Ok(ExitStatus::from_raw(9)))).await;
        match heard {
            Heard::Exited(status) => assert!(status.contains("signal: 9"), "{status}"),
            other => panic!("expected the exit, got {other:?}"),
        }
    }
}
