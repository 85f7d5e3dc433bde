//! The real binary as a child process: run to completion ([`run`],
//! [`output`]), or started ([`Spawn`]), waited for until it is ready (a log
//! line, [`Process::wait_line`]; its addresses, [`Process::listener_addr`])
//! and stopped: SIGTERM by its own PID, a bounded wait, SIGKILL if it hangs
//! ([`Process::stop`], also on drop, so a failing test leaves nothing behind).

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_sysmanage-node");

/// How long a started process has to print what shows it is ready.
pub const READY: Duration = Duration::from_secs(20);
/// How long [`Process::stop`] waits after SIGTERM before SIGKILL.
pub const STOP: Duration = Duration::from_secs(10);

/// Runs the binary to completion, stdin closed.
pub fn output<S: AsRef<OsStr>>(args: &[S]) -> Output {
    Command::new(BIN).args(args).stdin(Stdio::null()).output().expect("the binary runs")
}

/// Runs the binary to completion: exit code (-1 for a signal), stdout, stderr.
pub fn run<S: AsRef<OsStr>>(args: &[S]) -> (i32, String, String) {
    let out = output(args);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The binary about to be started, stdin closed. By default its stderr
/// (the log) is read line by line and its stdout discarded.
pub struct Spawn {
    cmd: Command,
    read: Reads,
}

/// Which stream of the process is read.
enum Reads {
    Stderr,
    Stdout,
    Nothing,
}

impl Spawn {
    pub fn new<S: AsRef<OsStr>>(args: &[S]) -> Spawn {
        let mut cmd = Command::new(BIN);
        cmd.args(args).stdin(Stdio::null());
        Spawn { cmd, read: Reads::Stderr }
    }

    /// `run -c CONFIG` with `RUST_LOG=info`, so that it logs its addresses
    /// ([`Process::listener_addr`]) and "sysmanage-node started".
    pub fn run(config: &Path) -> Spawn {
        Spawn::new(&[OsStr::new("run"), OsStr::new("-c"), config.as_os_str()]).env("RUST_LOG", "info")
    }

    /// [`Spawn::run`] with at most `open_files` file descriptors (`ulimit
    /// -n`, set by `sh`, which then execs the binary: the PID is the node's).
    pub fn run_with_open_files(config: &Path, open_files: u32) -> Spawn {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "ulimit -n \"$0\" && exec \"$@\""])
            .arg(open_files.to_string())
            .arg(BIN)
            .args(["run", "-c"])
            .arg(config)
            .stdin(Stdio::null())
            .env("RUST_LOG", "info");
        Spawn { cmd, read: Reads::Stderr }
    }

    pub fn env(mut self, key: &str, value: impl AsRef<OsStr>) -> Spawn {
        self.cmd.env(key, value);
        self
    }

    /// Reads stdout instead; stderr goes to the test's.
    pub fn read_stdout(mut self) -> Spawn {
        self.read = Reads::Stdout;
        self
    }

    /// Sends stderr to `file` and reads nothing.
    pub fn log_to(mut self, file: std::fs::File) -> Spawn {
        self.cmd.stderr(file);
        self.read = Reads::Nothing;
        self
    }

    /// [`Spawn::spawn`], then waits (off the async runtime) until it
    /// logs "sysmanage-node started".
    pub async fn started(self) -> Process {
        tokio::task::spawn_blocking(move || {
            let node = self.spawn();
            node.wait_line("that it started", READY, |l| l.contains("sysmanage-node started"));
            node
        })
        .await
        .expect("the waiting task")
    }

    pub fn spawn(mut self) -> Process {
        match self.read {
            Reads::Stderr => self.cmd.stdout(Stdio::null()).stderr(Stdio::piped()),
            Reads::Stdout => self.cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()),
            Reads::Nothing => self.cmd.stdout(Stdio::null()),
        };
        let mut child = self.cmd.spawn().expect("the binary starts");
        let output = Arc::new(Lines::default());
        let stream: Option<Box<dyn Read + Send>> = match self.read {
            Reads::Stderr => child.stderr.take().map(|s| Box::new(s) as Box<dyn Read + Send>),
            Reads::Stdout => child.stdout.take().map(|s| Box::new(s) as Box<dyn Read + Send>),
            Reads::Nothing => None,
        };
        match stream {
            Some(stream) => {
                let lines = output.clone();
                std::thread::spawn(move || {
                    for line in BufReader::new(stream).lines().map_while(Result::ok) {
                        lines.push(line);
                    }
                    lines.close();
                });
            }
            None => output.close(),
        }
        Process { child, output, exited: None }
    }
}

/// What a process printed on the stream that is read, line by line.
#[derive(Default)]
struct Lines {
    /// The lines so far, and whether the stream has ended.
    state: Mutex<(Vec<String>, bool)>,
    changed: Condvar,
}

impl Lines {
    fn push(&self, line: String) {
        self.state.lock().unwrap().0.push(line);
        self.changed.notify_all();
    }

    fn close(&self) {
        self.state.lock().unwrap().1 = true;
        self.changed.notify_all();
    }

    /// The first line that satisfies `pred`, waiting up to `limit` for it;
    /// `None` when the stream ends or the time runs out first.
    fn find(&self, limit: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + limit;
        let mut seen = 0;
        let mut state = self.state.lock().unwrap();
        loop {
            if let Some(line) = state.0[seen..].iter().find(|l| pred(l)) {
                return Some(line.clone());
            }
            seen = state.0.len();
            let left = deadline.checked_duration_since(Instant::now())?;
            if state.1 {
                return None;
            }
            state = self.changed.wait_timeout(state, left).unwrap().0;
        }
    }

    /// Waits up to `limit` for the stream to end.
    fn wait_end(&self, limit: Duration) {
        let state = self.state.lock().unwrap();
        drop(self.changed.wait_timeout_while(state, limit, |s| !s.1).unwrap());
    }
}

/// A running `sysmanage-node`, stopped (SIGTERM, then SIGKILL after
/// [`STOP`]) when dropped.
pub struct Process {
    child: Child,
    output: Arc<Lines>,
    exited: Option<ExitStatus>,
}

impl Process {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The first line (from the start) that satisfies `pred`; waits up to
    /// `limit` for it, and panics with the whole output if it does not come.
    pub fn wait_line(&self, what: &str, limit: Duration, pred: impl Fn(&str) -> bool) -> String {
        self.find_line(limit, pred).unwrap_or_else(|| {
            panic!("the process did not print {what} within {limit:?}; it printed:\n{}", self.lines().join("\n"))
        })
    }

    /// [`Self::wait_line`] that returns `None` instead of panicking.
    pub fn find_line(&self, limit: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        self.output.find(limit, pred)
    }

    /// The address of the first listener in its `listening` log line.
    pub fn listener_addr(&self) -> SocketAddr {
        self.logged_addr("a listener's address", |l| !l.contains("admin API"))
    }

    /// The admin API's address, from its `admin API listening` log line.
    pub fn admin_addr(&self) -> SocketAddr {
        self.logged_addr("the admin API's address", |l| l.contains("admin API"))
    }

    fn logged_addr(&self, what: &str, which: impl Fn(&str) -> bool) -> SocketAddr {
        let line = self.wait_line(what, READY, |l| listening_addr(l).is_some() && which(l));
        listening_addr(&line).unwrap().parse().unwrap_or_else(|e| panic!("{line}: {e}"))
    }

    /// Every line read so far.
    pub fn lines(&self) -> Vec<String> {
        self.output.state.lock().unwrap().0.clone()
    }

    /// The lines read so far that contain `needle`.
    pub fn lines_with(&self, needle: &str) -> Vec<String> {
        self.output.state.lock().unwrap().0.iter().filter(|l| l.contains(needle)).cloned().collect()
    }

    /// Sends `sig` (`-TERM`, `-INT`, `-HUP`, ...) to the process by its PID.
    pub fn signal(&self, sig: &str) {
        assert!(self.send(sig), "kill {sig} {} failed", self.pid());
    }

    fn send(&self, sig: &str) -> bool {
        Command::new("kill").args([sig, &self.pid().to_string()]).status().is_ok_and(|s| s.success())
    }

    /// Waits up to `limit` for the process to exit, then up to 5 s more for
    /// the rest of its output; `None` if it is still running.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        while self.exited.is_none() {
            self.exited = self.child.try_wait().unwrap();
            if self.exited.is_none() {
                if Instant::now() > deadline {
                    return None;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        self.output.wait_end(Duration::from_secs(5));
        self.exited
    }

    /// SIGTERM, up to [`STOP`] to exit, then SIGKILL: its exit status.
    pub fn stop(&mut self) -> ExitStatus {
        if self.exited.is_none() {
            self.send("-TERM");
        }
        match self.wait_exit(STOP) {
            Some(status) => status,
            None => self.kill(),
        }
    }

    /// SIGKILL (`kill -9`), and its exit status.
    pub fn kill(&mut self) -> ExitStatus {
        if self.exited.is_none() {
            let _ = self.child.kill();
            self.exited = Some(self.child.wait().unwrap());
        }
        self.exited.unwrap()
    }

    /// Peak resident memory (VmHWM), in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        status_kib(&self.pid().to_string(), "VmHWM:")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// A field of `/proc/PID/status` in KiB (`pid` may be `self`).
pub fn status_kib(pid: &str, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// The address of a `listening` log line, in the text (`addr=A`) or the
/// JSON (`"addr":"A"`) format.
pub fn listening_addr(line: &str) -> Option<&str> {
    if !line.contains("listening") {
        return None;
    }
    if let Some(rest) = line.split("addr=").nth(1) {
        return rest.split_whitespace().next();
    }
    line.split("\"addr\":\"").nth(1).and_then(|rest| rest.split('"').next())
}
