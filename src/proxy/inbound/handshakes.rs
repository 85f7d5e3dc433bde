//! TLS handshakes on threads of their own, at a lower CPU priority than the
//! workers.
//!
//! A full TLS handshake costs the server a key exchange and a signature,
//! and its socket work: together most of what a new agent costs (about
//! 0.4 ms of CPU each with the WebSocket set-up, `perf` in BENCHMARKS.md).
//! When thousands of agents reconnect at once (after a restart of the
//! node, of a front, or of the network), the workers' run queues filled with
//! handshakes, and an established tunnel's heartbeat waited behind all of
//! them: a p99 round trip of 1.3 s during a storm of 9,000 agents. HAProxy
//! runs such "heavy" work one item per scheduler loop (`TL_HEAVY`); here the
//! kernel does the same job: handshakes run on threads at nice
//! [`NICE`], so that a worker woken by a byte of an established connection
//! takes the core from them at once, and they get whatever CPU the workers
//! leave (and about a tenth of it while the workers are saturated, so new
//! clients are slowed, not starved).
//!
//! A connection is accepted by its worker; for the handshake its socket
//! moves to a handshake thread's runtime, and back to the worker's once
//! the handshake is done, where it is served as any other.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// The nice value of the handshake threads (workers run at the process's,
/// normally 0). 10: a weight about a tenth of a worker's.
pub const NICE: i32 = 10;

/// Threads that run TLS handshakes, one tokio runtime each. Stopped when
/// dropped (handshakes still running on them are abandoned, their
/// connections closed).
pub struct HandshakeThreads {
    handles: Vec<Handle>,
    next: AtomicUsize,
    _stop: Vec<oneshot::Sender<()>>,
}

impl HandshakeThreads {
    /// Starts `n` threads (at least one). A thread whose priority cannot be
    /// lowered still runs, at the workers' priority (logged once).
    pub fn start(n: usize) -> std::io::Result<Arc<HandshakeThreads>> {
        let mut handles = Vec::new();
        let mut stops = Vec::new();
        for i in 0..n.max(1) {
            let (handle_tx, handle_rx) = std::sync::mpsc::channel();
            let (stop_tx, stop_rx) = oneshot::channel::<()>();
            std::thread::Builder::new().name(format!("tls-handshake-{i}")).spawn(move || {
                if let Err(e) = lower_priority() {
                    tracing::warn!(error = %e, "TLS handshake thread runs at the workers' priority");
                }
                let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = handle_tx.send(Err(e));
                        return;
                    }
                };
                let _ = handle_tx.send(Ok(rt.handle().clone()));
                rt.block_on(async {
                    let _ = stop_rx.await;
                });
            })?;
            let handle = handle_rx.recv().map_err(|_| std::io::Error::other("TLS handshake thread died"))??;
            handles.push(handle);
            stops.push(stop_tx);
        }
        Ok(Arc::new(HandshakeThreads { handles, next: AtomicUsize::new(0), _stop: stops }))
    }

    /// Runs `work` on a handshake thread and returns its output; `None` if
    /// the thread was stopped before it finished.
    pub async fn run<F>(&self, work: F) -> Option<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        self.handles[i].spawn(work).await.ok()
    }
}

/// Lowers the calling thread's priority by [`NICE`] (to 19 at most; on
/// Linux `setpriority` with a thread id acts on that thread alone).
fn lower_priority() -> std::io::Result<()> {
    let tid = rustix::thread::gettid();
    let own = rustix::process::getpriority_process(Some(tid))?;
    rustix::process::setpriority_process(Some(tid), (own + NICE).min(19))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn work_runs_on_a_thread_of_lower_priority_and_returns() {
        let threads = HandshakeThreads::start(2).unwrap();
        for _ in 0..4 {
            let (name, nice) = threads
                .run(async {
                    let tid = rustix::thread::gettid();
                    let nice = rustix::process::getpriority_process(Some(tid)).unwrap();
                    (std::thread::current().name().unwrap().to_string(), nice)
                })
                .await
                .expect("the thread runs it");
            assert!(name.starts_with("tls-handshake-"), "{name}");
            let own = rustix::process::getpriority_process(None).unwrap();
            assert_eq!(nice, (own + NICE).min(19), "nice of {name}");
        }
    }

    #[tokio::test]
    async fn stopped_threads_answer_none_instead_of_hanging() {
        let threads = HandshakeThreads::start(1).unwrap();
        let handle = threads.handles[0].clone();
        let stopped = Arc::try_unwrap(threads).ok().unwrap();
        let HandshakeThreads { handles, next, _stop } = stopped;
        drop(_stop);
        // The runtime shuts down once its thread's block_on returns.
        for _ in 0..100 {
            if handle.spawn(async {}).await.is_err() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let threads = HandshakeThreads { handles, next, _stop: Vec::new() };
        let out = tokio::time::timeout(std::time::Duration::from_secs(5), threads.run(async { 1 })).await;
        assert_eq!(out.expect("no hang"), None);
    }
}
