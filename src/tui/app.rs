//! The dashboard's state as plain data: the last status the node sent, the
//! history behind the sparklines, the sessions view, the selection, the
//! filter, and what the operator is typing or confirming.
//!
//! Pure: it never does I/O and never reads a clock. The event loop feeds it
//! answers from the transport (`ingest_*`), key presses ([`App::on_key`],
//! in `keys.rs`) and the time (`now_ms`), and carries out the [`Effect`]s it
//! returns. The panes only read it. That is what makes it testable without a
//! terminal or a node.

use std::collections::VecDeque;

use crate::api::{Event, ServerStatus, SessionRecordView, SessionsView, Status};

/// Samples kept for the sparklines: five minutes at one poll a second.
pub const HISTORY: usize = 300;
/// How long an action's answer stays in the footer.
pub const FLASH_MS: u64 = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pane {
    Overview,
    Backends,
    Cluster,
    Sessions,
    Events,
}

impl Pane {
    pub const ALL: [Pane; 5] = [Pane::Overview, Pane::Backends, Pane::Cluster, Pane::Sessions, Pane::Events];

    pub fn title(self) -> &'static str {
        match self {
            Pane::Overview => "Overview",
            Pane::Backends => "Backends",
            Pane::Cluster => "Cluster",
            Pane::Sessions => "Sessions",
            Pane::Events => "Events",
        }
    }

    pub fn index(self) -> usize {
        Pane::ALL.iter().position(|p| *p == self).unwrap_or(0)
    }
}

/// A server, named the way the admin API's paths name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerRef {
    pub pool: String,
    pub server: String,
}

impl std::fmt::Display for ServerRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.pool, self.server)
    }
}

/// A write action, sent only after the operator confirms it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Drain(ServerRef),
    Maintenance(ServerRef),
    Enable(ServerRef),
    Weight(ServerRef, u32),
    Reload,
}

impl Action {
    /// The question the confirmation asks.
    pub fn question(&self) -> String {
        match self {
            Action::Drain(s) => format!("Drain {s}?"),
            Action::Maintenance(s) => format!("Put {s} in maintenance?"),
            Action::Enable(s) => format!("Enable {s}?"),
            Action::Weight(s, w) => format!("Set the weight of {s} to {w}?"),
            Action::Reload => "Reload the node's config file?".to_string(),
        }
    }

    /// What it does, in one line under the question.
    pub fn consequence(&self) -> &'static str {
        match self {
            Action::Drain(_) => "New requests go elsewhere; open ones and tunnels finish.",
            Action::Maintenance(_) => "The server gets no traffic at all until enabled.",
            Action::Enable(_) => "The server takes traffic again when its checks pass.",
            Action::Weight(..) => "Kept until the next reload.",
            Action::Reload => "An invalid config is refused and the running one kept.",
        }
    }

    /// Short form for the footer: "drain api/a1".
    pub fn describe(&self) -> String {
        match self {
            Action::Drain(s) => format!("drain {s}"),
            Action::Maintenance(s) => format!("maintenance {s}"),
            Action::Enable(s) => format!("enable {s}"),
            Action::Weight(s, w) => format!("weight {s} {w}"),
            Action::Reload => "reload".to_string(),
        }
    }
}

/// What the event loop must do after a key press.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    Quit,
    /// Poll now rather than at the next tick (a pane that needs more data
    /// was opened).
    Refresh,
    Act(Action),
    Lookup(String),
}

/// What the keyboard is doing now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    Normal,
    Help,
    /// Typing the filter; it applies as it is typed.
    Filter,
    /// Typing a session key to look up.
    Search(String),
    /// Typing a new weight for a server.
    Weight {
        target: ServerRef,
        text: String,
    },
    /// Waiting for y or n.
    Confirm(Action),
}

/// Whether the node answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Link {
    /// No answer yet.
    Connecting,
    Live,
    /// The last poll failed; `since_ms` is when the first of the failed polls
    /// in a row was answered (or not).
    Unreachable {
        error: String,
        since_ms: u64,
    },
}

/// `GET /api/v1/sessions` as the dashboard understands it.
#[derive(Debug, Clone, PartialEq)]
pub enum SessionsData {
    /// Not fetched yet (only fetched on the panes that show it).
    Unknown,
    /// The API answered 404: no pool has affinity.
    NoAffinity(String),
    View(SessionsView),
    Failed(String),
}

/// The transport's answer to `GET /api/v1/sessions`.
#[derive(Debug, Clone, PartialEq)]
pub enum SessionsAnswer {
    View(SessionsView),
    /// 404 with the API's message.
    NoAffinity(String),
}

/// The transport's answer to `GET /api/v1/sessions?key=K`.
#[derive(Debug, Clone, PartialEq)]
pub enum LookupAnswer {
    Found(Vec<SessionRecordView>),
    /// 404 with the API's message.
    NotFound(String),
}

/// The search box's result.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    None,
    Pending(String),
    Found(String, Vec<SessionRecordView>),
    NotFound(String, String),
    Failed(String, String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlashKind {
    Info,
    Success,
    Error,
}

/// A one-line message in the footer: an action's answer, or why a key did
/// nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flash {
    pub text: String,
    pub kind: FlashKind,
    pub at_ms: u64,
}

/// One poll's totals, for the sparklines.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub at_ms: u64,
    pub requests_per_second: f64,
    pub error_rate: f64,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

#[derive(Debug, Clone)]
pub struct App {
    /// Where the admin API is, for the title and error messages.
    pub admin_url: String,
    /// Whether `top` holds an admin token (write actions need one).
    pub has_token: bool,
    pub pane: Pane,
    pub input: Input,
    pub link: Link,
    /// The last status received; kept while the node is unreachable so the
    /// operator still sees the last known state (marked stale).
    pub status: Option<Status>,
    pub last_ok_ms: Option<u64>,
    pub now_ms: u64,
    /// Oldest first, at most [`HISTORY`].
    pub history: VecDeque<Point>,
    pub sessions: SessionsData,
    pub lookup: Lookup,
    /// Applies to the Backends, Cluster and Events panes.
    pub filter: String,
    pub selected: Option<ServerRef>,
    /// First event shown on the Events pane.
    pub events_offset: usize,
    pub flash: Option<Flash>,
    /// An action was sent and its answer has not come back.
    pub action_in_flight: Option<Action>,
}

impl App {
    pub fn new(admin_url: &str, has_token: bool) -> App {
        App {
            admin_url: admin_url.trim_end_matches('/').to_string(),
            has_token,
            pane: Pane::Overview,
            input: Input::Normal,
            link: Link::Connecting,
            status: None,
            last_ok_ms: None,
            now_ms: 0,
            history: VecDeque::with_capacity(HISTORY),
            sessions: SessionsData::Unknown,
            lookup: Lookup::None,
            filter: String::new(),
            selected: None,
            events_offset: 0,
            flash: None,
            action_in_flight: None,
        }
    }

    /// Moves the clock; expires the footer message.
    pub fn tick(&mut self, now_ms: u64) {
        self.now_ms = now_ms;
        if self.flash.as_ref().is_some_and(|f| now_ms.saturating_sub(f.at_ms) >= FLASH_MS) {
            self.flash = None;
        }
    }

    /// A poll of `/api/v1/status` came back.
    pub fn ingest_status(&mut self, result: Result<Status, String>, now_ms: u64) {
        self.tick(now_ms);
        match result {
            Ok(status) => {
                let t = &status.totals;
                if self.history.len() == HISTORY {
                    self.history.pop_front();
                }
                self.history.push_back(Point {
                    at_ms: now_ms,
                    requests_per_second: t.requests_per_second,
                    error_rate: t.error_rate,
                    p50_ms: t.p50_ms,
                    p95_ms: t.p95_ms,
                    p99_ms: t.p99_ms,
                });
                self.status = Some(status);
                self.link = Link::Live;
                self.last_ok_ms = Some(now_ms);
                self.fix_selection();
            }
            Err(error) => {
                let since_ms = match &self.link {
                    Link::Unreachable { since_ms, .. } => *since_ms,
                    _ => now_ms,
                };
                self.link = Link::Unreachable { error, since_ms };
            }
        }
    }

    pub fn ingest_sessions(&mut self, result: Result<SessionsAnswer, String>) {
        self.sessions = match result {
            Ok(SessionsAnswer::View(v)) => SessionsData::View(v),
            Ok(SessionsAnswer::NoAffinity(m)) => SessionsData::NoAffinity(m),
            Err(e) => SessionsData::Failed(e),
        };
    }

    pub fn ingest_lookup(&mut self, key: String, result: Result<LookupAnswer, String>) {
        self.lookup = match result {
            Ok(LookupAnswer::Found(records)) => Lookup::Found(key, records),
            Ok(LookupAnswer::NotFound(message)) => Lookup::NotFound(key, message),
            Err(e) => Lookup::Failed(key, e),
        };
    }

    /// The API answered an action: `Ok` holds its answer in words.
    pub fn ingest_action(&mut self, action: Action, result: Result<String, String>) {
        self.action_in_flight = None;
        match result {
            Ok(answer) => self.flash(FlashKind::Success, answer),
            Err(e) => self.flash(FlashKind::Error, format!("{} failed: {e}", action.describe())),
        }
    }

    pub(crate) fn flash(&mut self, kind: FlashKind, text: String) {
        self.flash = Some(Flash { text, kind, at_ms: self.now_ms });
    }

    /// Whether a poll should also fetch the sessions view.
    pub fn wants_sessions(&self) -> bool {
        matches!(self.pane, Pane::Backends | Pane::Sessions)
    }

    /// Why write actions cannot be sent, if they cannot.
    pub fn writes_unavailable(&self) -> Option<String> {
        if !self.has_token {
            return Some(
                "write actions unavailable: no admin token (start top with --token-file FILE; \
                 the default /etc/sysmanage-node/admin.token was not readable)"
                    .to_string(),
            );
        }
        if self.status.as_ref().is_some_and(|s| !s.node.admin_writes) {
            return Some(
                "write actions unavailable: the node has them off (no admin.token_file in its config)".to_string(),
            );
        }
        None
    }

    /// Backends rows that pass the filter, as (pool index, server index).
    pub fn backend_rows(&self) -> Vec<(usize, usize)> {
        let Some(status) = &self.status else { return Vec::new() };
        let mut rows = Vec::new();
        for (pi, pool) in status.pools.iter().enumerate() {
            for (si, s) in pool.servers.iter().enumerate() {
                if matches_filter(&self.filter, &[&pool.name, &s.name, &s.addr, &s.state]) {
                    rows.push((pi, si));
                }
            }
        }
        rows
    }

    /// Position of the selected server in [`App::backend_rows`].
    pub fn selected_index(&self, rows: &[(usize, usize)]) -> Option<usize> {
        let (status, sel) = (self.status.as_ref()?, self.selected.as_ref()?);
        rows.iter().position(|&(p, s)| {
            let pool = &status.pools[p];
            pool.name == sel.pool && pool.servers[s].name == sel.server
        })
    }

    /// Keeps the selection on a visible server: the same one if it is still
    /// shown, else the first row.
    pub(crate) fn fix_selection(&mut self) {
        let rows = self.backend_rows();
        if self.selected_index(&rows).is_none() {
            self.selected = rows.first().map(|&(p, s)| self.server_ref(p, s));
        }
    }

    pub(crate) fn server_ref(&self, pool: usize, server: usize) -> ServerRef {
        let p = &self.status.as_ref().expect("rows come from a status").pools[pool];
        ServerRef { pool: p.name.clone(), server: p.servers[server].name.clone() }
    }

    /// Events that pass the filter, newest first (the API's order).
    pub fn event_rows(&self) -> Vec<&Event> {
        let Some(status) = &self.status else { return Vec::new() };
        status
            .events
            .iter()
            .filter(|e| {
                matches_filter(
                    &self.filter,
                    &[&e.kind, e.pool.as_deref().unwrap_or(""), e.server.as_deref().unwrap_or(""), &e.message],
                )
            })
            .collect()
    }

    /// Each `primary` pool and the server it sends traffic to now, derived
    /// from the status the way the balancer picks: the first server in
    /// configured order that takes new requests, backups only when no other
    /// server is up.
    pub fn primary_pools(&self) -> Vec<(&str, Option<&ServerStatus>)> {
        let Some(status) = &self.status else { return Vec::new() };
        status
            .pools
            .iter()
            .filter(|p| p.balance == "primary")
            .filter(|p| matches_filter(&self.filter, &[&p.name]))
            .map(|p| {
                // The node marks the server it (and its cluster) agreed on;
                // older nodes do not, so fall back to the balancer's rule.
                let active = p.servers.iter().find(|s| s.active);
                let up = |backup: bool| p.servers.iter().find(|s| s.backup == backup && s.state == "up");
                (p.name.as_str(), active.or_else(|| up(false)).or_else(|| up(true)))
            })
            .collect()
    }

    /// Seconds since the last good answer.
    pub fn stale_seconds(&self) -> Option<u64> {
        self.last_ok_ms.map(|t| self.now_ms.saturating_sub(t) / 1000)
    }
}

/// Case-insensitive substring match on any field; an empty filter matches.
pub fn matches_filter(filter: &str, fields: &[&str]) -> bool {
    if filter.is_empty() {
        return true;
    }
    let f = filter.to_lowercase();
    fields.iter().any(|x| x.to_lowercase().contains(&f))
}

#[cfg(test)]
#[path = "app_tests.rs"]
mod tests;
