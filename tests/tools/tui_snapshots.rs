//! Snapshot tests of `sysmanage-node top`: every pane rendered into
//! ratatui's `TestBackend` at 80×24 and 120×40 from fixed data
//! (`tests/snapshots/status.json`: a draining server, a down one, one in
//! maintenance, one out after passive failures), plus an unreachable node,
//! the pop-ups and prompts. Compared line by line with the text files in
//! `tests/snapshots/`; no clock is read, so they are stable.
//!
//! After an intended change to the layout, regenerate and review the diff:
//! `UPDATE_SNAPSHOTS=1 cargo test --test tools tui_snapshots`.

use std::path::PathBuf;

use crossterm::event::{KeyCode, KeyEvent};
use ratatui::backend::TestBackend;
use ratatui::buffer::Buffer;
use ratatui::style::Color;
use ratatui::Terminal;
use sysmanage_node::api::{SessionRecordView, SessionsView, Status};
use sysmanage_node::tui::app::{LookupAnswer, SessionsAnswer};
use sysmanage_node::tui::{ui, App};

/// The fixtures' "now": 2026-11-18 11:06:40 UTC.
const NOW: u64 = 1_795_000_000_000;
const SIZES: [(u16, u16); 2] = [(80, 24), (120, 40)];

fn status() -> Status {
    serde_json::from_str(include_str!("../snapshots/status.json")).unwrap()
}

fn sessions() -> SessionsView {
    serde_json::from_str(include_str!("../snapshots/sessions.json")).unwrap()
}

/// An app that has polled the fixture node for five minutes: traffic that
/// rises and falls, a burst of 5xx, and latency that climbs at the end.
fn live_app() -> App {
    let mut app = App::new("http://127.0.0.1:9100", true);
    for i in 0..300u64 {
        let mut s = status();
        let t = &mut s.totals;
        t.requests_per_second = 150.0 + ((i * 7) % 90) as f64;
        t.error_rate = if (200..215).contains(&i) { 0.03 } else { 0.0042 };
        t.p50_ms = Some(2.0 + (i % 10) as f64 * 0.2);
        t.p95_ms = Some(12.0 + (i / 20) as f64);
        t.p99_ms = if i < 10 { None } else { Some(80.0 + (i / 5) as f64 * 2.0) };
        if i == 299 {
            s = status();
        }
        app.ingest_status(Ok(s), NOW - (299 - i) * 1000);
    }
    app.ingest_sessions(Ok(SessionsAnswer::View(sessions())));
    app
}

fn keys(app: &mut App, keys: &str) {
    for c in keys.chars() {
        app.on_key(KeyEvent::from(KeyCode::Char(c)));
    }
}

fn render(app: &App, (w, h): (u16, u16)) -> Buffer {
    let mut term = Terminal::new(TestBackend::new(w, h)).unwrap();
    term.draw(|f| ui::draw(f, app)).unwrap();
    term.backend().buffer().clone()
}

fn text(buf: &Buffer) -> String {
    let mut out = String::new();
    for y in 0..buf.area.height {
        let line: String = (0..buf.area.width).map(|x| buf[(x, y)].symbol()).collect();
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Compares with `tests/snapshots/NAME.txt` (or writes it when
/// `UPDATE_SNAPSHOTS` is set).
fn check(name: &str, buf: &Buffer) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots").join(format!("{name}.txt"));
    let actual = text(buf);
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, &actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run with UPDATE_SNAPSHOTS=1 to create it", path.display()));
    if actual != expected {
        let mut diff = String::new();
        for (i, (a, e)) in actual.lines().zip(expected.lines()).enumerate() {
            if a != e {
                diff.push_str(&format!("line {i}:\n  expected: {e}\n  actual:   {a}\n"));
            }
        }
        panic!("{name} differs from {}:\n{diff}\nwhole screen:\n{actual}", path.display());
    }
}

fn each_size(name: &str, app: &App) {
    for size in SIZES {
        check(&format!("{name}-{}x{}", size.0, size.1), &render(app, size));
    }
}

#[test]
fn overview() {
    each_size("overview", &live_app());
}

#[test]
fn backends() {
    let mut app = live_app();
    keys(&mut app, "2j");
    each_size("backends", &app);
}

#[test]
fn cluster() {
    let mut app = live_app();
    keys(&mut app, "3");
    each_size("cluster", &app);
}

/// The fixture node as the second of three cluster members, one of them dead.
fn clustered(mut s: Status) -> Status {
    let member = |name: &str, addr: &str, state: &str, is_self: bool, heard: Option<u64>, conns: Option<u64>| {
        sysmanage_node::api::MemberInfo {
            name: name.into(),
            addr: addr.into(),
            generation: 1_794_999_000_000,
            state: state.into(),
            is_self,
            last_heard_ms: heard,
            version: Some("0.1.0".into()),
            admin_addr: None,
            sessions: conns.map(|_| 1200),
            connections: conns,
            // lb1 drains (`ctl drain-node`): the pane says so.
            draining_since_unix_ms: (name == "lb1").then_some(1_795_000_000_000),
        }
    };
    s.cluster = Some(sysmanage_node::api::ClusterStatus {
        gossip_addr: "10.0.1.11:7946".into(),
        live: 2,
        dead: 1,
        syncing: false,
        last_sync: None,
        datagrams_dropped: 3,
        auth_failures: 0,
        state_keys: 31,
        state_bytes: 1_912,
        members: vec![
            member("lb1", "10.0.1.10:7946", "live", false, Some(240), Some(812)),
            member("lb2", "10.0.1.11:7946", "live", true, None, None),
            member("lb3", "10.0.1.12:7946", "dead", false, Some(41_000), Some(0)),
        ],
    });
    for p in &mut s.pools {
        for srv in &mut p.servers {
            let up = srv.state == "up";
            srv.nodes_up = Some(if up { 2 } else { 0 });
            srv.nodes_reporting = Some(2);
        }
    }
    s
}

#[test]
fn cluster_members() {
    let mut app = App::new("http://127.0.0.1:9100", true);
    app.ingest_status(Ok(clustered(status())), NOW);
    keys(&mut app, "3");
    each_size("cluster-members", &app);
}

#[test]
fn sessions_with_a_key_found() {
    let mut app = live_app();
    keys(&mut app, "4");
    app.ingest_lookup(
        "web-042".into(),
        Ok(LookupAnswer::Found(vec![SessionRecordView {
            key: "web-042".into(),
            pool: "agents".into(),
            server: "ws-2".into(),
            expires_at_unix_ms: NOW + 3_540_000,
            version: 7_340_032_001,
            origin: "lb1".into(),
        }])),
    );
    each_size("sessions", &app);
}

#[test]
fn sessions_without_affinity_and_while_typing_a_key() {
    let mut app = live_app();
    keys(&mut app, "4/web-0");
    app.ingest_sessions(Ok(SessionsAnswer::NoAffinity("no pool has affinity: there are no sessions".into())));
    check("sessions-no-affinity-80x24", &render(&app, (80, 24)));
}

#[test]
fn events() {
    let mut app = live_app();
    keys(&mut app, "5");
    each_size("events", &app);
}

#[test]
fn unreachable_node_never_reached() {
    let mut app = App::new("http://10.0.1.10:9100", false);
    app.tick(NOW);
    let err = "cannot reach the admin API at http://10.0.1.10:9100/api/v1/status: client error (Connect): \
               tcp connect error: Connection refused (os error 111)";
    app.ingest_status(Err(err.into()), NOW - 7000);
    app.ingest_status(Err(err.into()), NOW);
    each_size("unreachable", &app);
}

#[test]
fn unreachable_node_after_it_answered_keeps_the_last_data() {
    let mut app = live_app();
    keys(&mut app, "2");
    app.ingest_status(
        Err("cannot reach the admin API at http://127.0.0.1:9100/api/v1/status: no answer within 3s".into()),
        NOW + 1000,
    );
    app.ingest_status(
        Err("cannot reach the admin API at http://127.0.0.1:9100/api/v1/status: no answer within 3s".into()),
        NOW + 12_000,
    );
    check("unreachable-stale-backends-80x24", &render(&app, (80, 24)));
}

#[test]
fn drain_confirmation_and_weight_prompt() {
    let mut app = live_app();
    keys(&mut app, "2jd");
    check("confirm-drain-80x24", &render(&app, (80, 24)));
    keys(&mut app, "nw12");
    check("weight-prompt-80x24", &render(&app, (80, 24)));
}

#[test]
fn help() {
    let mut app = live_app();
    keys(&mut app, "?");
    check("help-80x24", &render(&app, (80, 24)));
}

#[test]
fn filter_on_backends() {
    let mut app = live_app();
    keys(&mut app, "2/ws");
    check("backends-filter-80x24", &render(&app, (80, 24)));
}

#[test]
fn too_small_terminal_says_so() {
    let buf = render(&live_app(), (60, 20));
    assert!(text(&buf).contains("terminal too small: 60×20; sysmanage-node top needs 80×24"), "{}", text(&buf));
}

/// Colour is part of what the panes mean: check the states' cells.
#[test]
fn server_states_are_coloured() {
    let mut app = live_app();
    keys(&mut app, "2");
    let buf = render(&app, (120, 40));
    let screen = text(&buf);
    let fg_of = |word: &str, row_has: &str| {
        let (y, line) = screen.lines().enumerate().find(|(_, l)| l.contains(row_has)).unwrap();
        let x = line.char_indices().find(|&(i, _)| line[i..].starts_with(word)).map(|(i, _)| line[..i].chars().count());
        buf[(x.unwrap() as u16, y as u16)].fg
    };
    assert_eq!(fg_of("up", "api-1"), Color::Green);
    assert_eq!(fg_of("draining", "api-2"), Color::Yellow);
    assert_eq!(fg_of("down", "api-3"), Color::Red);
    assert_eq!(fg_of("maintenance", "api-4"), Color::Blue);
    assert_eq!(fg_of("out", "ws-1"), Color::LightRed);
    assert_eq!(fg_of("FAIL", "api-3"), Color::Red);
}
