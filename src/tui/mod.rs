//! `sysmanage-node top`: a live terminal dashboard (ratatui + crossterm)
//! over the admin API of any node it can reach. Never touches a node's
//! internals: everything it shows comes from `/api/v1/status` and
//! `/api/v1/sessions`, and its actions are the admin API's write endpoints.
//!
//! # Layout
//!
//! - [`app`]: the state, pure: `ingest_*` answers, key presses (`keys.rs`),
//!   derived rows; returns [`Effect`]s for the loop to carry out.
//! - [`transport`]: the admin API client calls and their answers.
//! - [`ui`]: the frame (title, tabs, footer, banner, pop-ups); one file per
//!   pane: `overview`, `backends`, `cluster`, `sessions`, `events`.
//! - `terminal`: raw mode and alternate screen in, and out on exit or panic.
//! - this file: the event loop, polling once a second.
//!
//! Snapshot tests render [`ui::draw`] into ratatui's `TestBackend` from
//! fixed status data (`tests/tools/tui_snapshots.rs`); the end-to-end test drives
//! the real binary under tmux (`tests/tui_e2e.rs`).

pub mod app;
mod backends;
mod cluster;
mod events;
mod keys;
mod overview;
mod sessions;
mod terminal;
pub mod text;
pub mod transport;
pub mod ui;

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossterm::event::{self, Event as TermEvent, KeyCode, KeyEvent};
use tokio::sync::mpsc::{self, UnboundedSender};

pub use app::{Action, App, Effect, Input, Pane};
use app::{LookupAnswer, SessionsAnswer};
use transport::Transport;

/// How often the node is polled.
pub const POLL: Duration = Duration::from_secs(1);

/// Test hook for the end-to-end test of the panic path: when this variable
/// names a key, pressing it panics (nothing else reads it).
pub const PANIC_KEY_ENV: &str = "SYSMANAGE_NODE_TOP_PANIC_ON_KEY";

/// Runs the dashboard until the operator quits.
pub fn run(admin: &str, token_file: Option<&Path>) -> ExitCode {
    let token = match crate::ctl::read_token(token_file) {
        Ok(t) => t.filter(|t| !t.is_empty()),
        Err(e) => {
            eprintln!("sysmanage-node top: {e}");
            return ExitCode::FAILURE;
        }
    };
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        eprintln!("sysmanage-node top: needs a terminal (use `sysmanage-node ctl status` in scripts)");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sysmanage-node top: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut app = App::new(admin, token.is_some());
    let transport = Arc::new(Transport::new(admin, token));
    let mut term = match terminal::enter() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("sysmanage-node top: cannot set up the terminal: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(event_loop(&mut term, &mut app, transport));
    terminal::restore();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sysmanage-node top: {e}");
            ExitCode::FAILURE
        }
    }
}

/// What reaches the event loop.
enum Update {
    Key(KeyEvent),
    /// The terminal was resized: draw again (ratatui resizes on draw).
    Resized,
    InputFailed(std::io::Error),
    Status(Box<Result<crate::api::Status, String>>),
    Sessions(Result<SessionsAnswer, String>),
    Lookup(String, Result<LookupAnswer, String>),
    Action(Action, Result<String, String>),
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Polls in flight, so a slow node does not pile requests up.
#[derive(Default)]
struct Polls {
    status: bool,
    sessions: bool,
}

fn poll(app: &App, polls: &mut Polls, transport: &Arc<Transport>, tx: &UnboundedSender<Update>) {
    if !polls.status {
        polls.status = true;
        let (t, tx) = (transport.clone(), tx.clone());
        tokio::spawn(async move {
            let _ = tx.send(Update::Status(Box::new(t.status().await)));
        });
    }
    if app.wants_sessions() && !polls.sessions {
        polls.sessions = true;
        let (t, tx) = (transport.clone(), tx.clone());
        tokio::spawn(async move {
            let _ = tx.send(Update::Sessions(t.sessions().await));
        });
    }
}

async fn event_loop(term: &mut terminal::Term, app: &mut App, transport: Arc<Transport>) -> std::io::Result<()> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let keys = KeyReader::spawn(tx.clone());
    let panic_key = std::env::var(PANIC_KEY_ENV).ok().and_then(|v| v.chars().next());
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut polls = Polls::default();
    app.tick(now_ms());
    let result = loop {
        if terminal::panicked() {
            break Err(std::io::Error::other("stopped after an internal error (see the message above)"));
        }
        if let Err(e) = term.draw(|f| ui::draw(f, app)) {
            break Err(e);
        }
        let update = tokio::select! {
            _ = tick.tick() => {
                app.tick(now_ms());
                poll(app, &mut polls, &transport, &tx);
                continue;
            }
            u = rx.recv() => u,
        };
        let Some(update) = update else { break Ok(()) };
        match update {
            Update::Key(key) => {
                if panic_key.is_some_and(|c| key.code == KeyCode::Char(c)) {
                    panic!("{PANIC_KEY_ENV}: test panic on key {key:?}");
                }
                app.tick(now_ms());
                match app.on_key(key) {
                    None => {}
                    Some(Effect::Quit) => break Ok(()),
                    Some(Effect::Refresh) => poll(app, &mut polls, &transport, &tx),
                    Some(Effect::Lookup(k)) => {
                        let (t, tx) = (transport.clone(), tx.clone());
                        tokio::spawn(async move {
                            let answer = t.lookup(&k).await;
                            let _ = tx.send(Update::Lookup(k, answer));
                        });
                    }
                    Some(Effect::Act(action)) => {
                        let (t, tx) = (transport.clone(), tx.clone());
                        tokio::spawn(async move {
                            let answer = t.act(&action).await;
                            let _ = tx.send(Update::Action(action, answer));
                        });
                    }
                }
            }
            Update::Resized => {}
            Update::InputFailed(e) => break Err(e),
            Update::Status(r) => {
                polls.status = false;
                app.ingest_status(*r, now_ms());
            }
            Update::Sessions(r) => {
                polls.sessions = false;
                app.ingest_sessions(r);
            }
            Update::Lookup(key, r) => app.ingest_lookup(key, r),
            Update::Action(action, r) => {
                app.ingest_action(action, r);
                // Show the new state at once rather than at the next tick.
                poll(app, &mut polls, &transport, &tx);
            }
        }
    };
    keys.stop();
    result
}

/// Reads terminal events on a thread of its own (crossterm's reads block)
/// and forwards them; stops within 100 ms of [`KeyReader::stop`].
struct KeyReader {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl KeyReader {
    fn spawn(tx: UnboundedSender<Update>) -> KeyReader {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::SeqCst) && !tx.is_closed() {
                let update = match event::poll(Duration::from_millis(100)) {
                    Ok(false) => continue,
                    Ok(true) => match event::read() {
                        Ok(TermEvent::Key(k)) => Update::Key(k),
                        Ok(TermEvent::Resize(..)) => Update::Resized,
                        Ok(_) => continue,
                        Err(e) => Update::InputFailed(e),
                    },
                    Err(e) => Update::InputFailed(e),
                };
                let failed = matches!(update, Update::InputFailed(_));
                if tx.send(update).is_err() || failed {
                    return;
                }
            }
        });
        KeyReader { stop, thread: Some(thread) }
    }

    fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
