//! Unit tests of the dashboard state: ingesting answers, selection,
//! filtering, the confirmation flow, and what happens without a token. The
//! status is the snapshot tests' fixture (`tests/snapshots/status.json`),
//! so these also prove the fixture is what the API types read.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use super::*;
use crate::api::Status;

const NOW: u64 = 1_795_000_000_000;

fn fixture() -> Status {
    serde_json::from_str(include_str!("../../tests/snapshots/status.json")).expect("fixture reads as a Status")
}

fn app() -> App {
    let mut app = App::new("http://127.0.0.1:9100/", true);
    app.ingest_status(Ok(fixture()), NOW);
    app
}

fn press(app: &mut App, keys: &str) -> Vec<Effect> {
    keys.chars().filter_map(|c| app.on_key(KeyEvent::from(KeyCode::Char(c)))).collect()
}

fn key(app: &mut App, code: KeyCode) -> Option<Effect> {
    app.on_key(KeyEvent::from(code))
}

fn sel(app: &App) -> String {
    app.selected.as_ref().map(|s| s.to_string()).unwrap_or_default()
}

fn api2() -> ServerRef {
    ServerRef { pool: "api".into(), server: "api-2".into() }
}

#[test]
fn ingesting_a_status_goes_live_keeps_history_and_selects_the_first_server() {
    let mut app = App::new("http://127.0.0.1:9100/", true);
    assert_eq!(app.link, Link::Connecting);
    assert_eq!(app.admin_url, "http://127.0.0.1:9100", "trailing slash dropped");
    app.ingest_status(Ok(fixture()), NOW);
    assert_eq!(app.link, Link::Live);
    assert_eq!(app.last_ok_ms, Some(NOW));
    assert_eq!(sel(&app), "api/api-1");
    assert_eq!(app.history.len(), 1);
    assert_eq!(app.history[0].requests_per_second, 212.4);
    assert_eq!(app.history[0].p99_ms, Some(142.0));
    assert_eq!(app.backend_rows().len(), 7);
}

#[test]
fn history_is_bounded_to_the_last_five_minutes_of_polls() {
    let mut app = app();
    for i in 1..=(HISTORY as u64 + 20) {
        let mut s = fixture();
        s.totals.requests_per_second = i as f64;
        app.ingest_status(Ok(s), NOW + i * 1000);
    }
    assert_eq!(app.history.len(), HISTORY);
    assert_eq!(app.history.back().unwrap().requests_per_second, (HISTORY + 20) as f64);
    assert_eq!(app.history.front().unwrap().requests_per_second, 21.0);
}

#[test]
fn an_unreachable_node_keeps_the_last_status_and_counts_from_the_first_failure() {
    let mut app = app();
    app.ingest_status(Err("cannot reach the admin API".into()), NOW + 1000);
    app.ingest_status(Err("cannot reach the admin API again".into()), NOW + 5000);
    assert_eq!(app.link, Link::Unreachable { error: "cannot reach the admin API again".into(), since_ms: NOW + 1000 });
    assert!(app.status.is_some(), "last known status kept");
    assert_eq!(app.stale_seconds(), Some(5));
    assert_eq!(app.history.len(), 1, "failed polls add no samples");
    app.ingest_status(Ok(fixture()), NOW + 6000);
    assert_eq!(app.link, Link::Live);
}

#[test]
fn selection_moves_across_pools_stops_at_the_ends_and_survives_a_refresh() {
    let mut app = app();
    press(&mut app, "2");
    press(&mut app, "k");
    assert_eq!(sel(&app), "api/api-1", "stops at the top");
    press(&mut app, "jjjj");
    assert_eq!(sel(&app), "agents/ws-1", "crosses into the next pool");
    key(&mut app, KeyCode::End);
    assert_eq!(sel(&app), "agents/ws-3");
    press(&mut app, "j");
    assert_eq!(sel(&app), "agents/ws-3", "stops at the bottom");
    key(&mut app, KeyCode::Up);
    // The same server stays selected when a new status moves it.
    let mut s = fixture();
    s.pools.swap(0, 1);
    app.ingest_status(Ok(s), NOW + 1000);
    assert_eq!(sel(&app), "agents/ws-2");
    // A server that disappears hands the selection to the first row.
    let mut s = fixture();
    s.pools[1].servers.remove(1);
    app.ingest_status(Ok(s), NOW + 2000);
    assert_eq!(sel(&app), "api/api-1");
}

#[test]
fn filter_applies_as_typed_to_servers_and_events_and_esc_clears_it() {
    let mut app = app();
    press(&mut app, "2/");
    assert_eq!(app.input, Input::Filter);
    press(&mut app, "ws");
    assert_eq!(app.filter, "ws");
    assert_eq!(app.backend_rows().len(), 3);
    assert_eq!(sel(&app), "agents/ws-1", "selection moves onto a shown server");
    key(&mut app, KeyCode::Enter);
    assert_eq!(app.input, Input::Normal);
    assert_eq!(app.filter, "ws", "Enter keeps the filter");
    assert_eq!(app.event_rows().len(), 2, "events of ws-1 and ws-3");
    // Matches states and addresses too, case-insensitively.
    app.filter = "DRAIN".into();
    assert_eq!(app.backend_rows().len(), 1);
    app.filter = "10.0.1.12".into();
    assert_eq!(app.backend_rows().len(), 2);
    key(&mut app, KeyCode::Esc);
    assert_eq!(app.filter, "");
    assert_eq!(app.backend_rows().len(), 7);
    // Esc while typing clears it too; Backspace edits.
    press(&mut app, "/apx");
    key(&mut app, KeyCode::Backspace);
    assert_eq!(app.filter, "ap");
    key(&mut app, KeyCode::Esc);
    assert_eq!((app.filter.as_str(), &app.input), ("", &Input::Normal));
}

#[test]
fn drain_asks_for_confirmation_and_only_y_sends_it() {
    let mut app = app();
    press(&mut app, "2j");
    assert_eq!(press(&mut app, "d"), vec![]);
    assert_eq!(app.input, Input::Confirm(Action::Drain(api2())));
    // Other keys leave the question open.
    assert_eq!(press(&mut app, "xq"), vec![], "q answers no rather than quitting");
    assert_eq!(app.input, Input::Normal);
    assert!(app.flash.as_ref().unwrap().text.contains("cancelled"));
    press(&mut app, "d");
    assert_eq!(press(&mut app, "z"), vec![]);
    assert_eq!(app.input, Input::Confirm(Action::Drain(api2())));
    assert_eq!(press(&mut app, "y"), vec![Effect::Act(Action::Drain(api2()))]);
    assert_eq!(app.input, Input::Normal);
    assert_eq!(app.action_in_flight, Some(Action::Drain(api2())));
    // The API's answer is shown, success or error.
    app.ingest_action(Action::Drain(api2()), Ok("api/api-2: normal -> draining".into()));
    assert_eq!(app.action_in_flight, None);
    let flash = app.flash.clone().unwrap();
    assert_eq!((flash.kind, flash.text.as_str()), (FlashKind::Success, "api/api-2: normal -> draining"));
    app.ingest_action(Action::Reload, Err("http://x/api/v1/reload answered 422: the config is invalid".into()));
    let flash = app.flash.clone().unwrap();
    assert_eq!(flash.kind, FlashKind::Error);
    assert_eq!(flash.text, "reload failed: http://x/api/v1/reload answered 422: the config is invalid");
    // The message goes after FLASH_MS or at the next key.
    app.tick(NOW + FLASH_MS - 1);
    assert!(app.flash.is_some());
    app.tick(NOW + FLASH_MS);
    assert!(app.flash.is_none());
}

#[test]
fn maintenance_enable_and_reload_confirm_and_n_or_esc_cancel() {
    let mut app = app();
    press(&mut app, "2j");
    press(&mut app, "m");
    assert_eq!(app.input, Input::Confirm(Action::Maintenance(api2())));
    press(&mut app, "n");
    press(&mut app, "e");
    assert_eq!(app.input, Input::Confirm(Action::Enable(api2())));
    key(&mut app, KeyCode::Esc);
    assert_eq!(app.input, Input::Normal);
    press(&mut app, "r");
    assert_eq!(app.input, Input::Confirm(Action::Reload));
    assert_eq!(press(&mut app, "Y"), vec![Effect::Act(Action::Reload)]);
}

#[test]
fn weight_prompts_for_a_number_then_confirms() {
    let mut app = app();
    press(&mut app, "2j");
    press(&mut app, "w");
    assert_eq!(app.input, Input::Weight { target: api2(), text: String::new() });
    press(&mut app, "1x2");
    assert_eq!(app.input, Input::Weight { target: api2(), text: "12".into() }, "digits only");
    key(&mut app, KeyCode::Backspace);
    press(&mut app, "5");
    key(&mut app, KeyCode::Enter);
    assert_eq!(app.input, Input::Confirm(Action::Weight(api2(), 15)));
    assert_eq!(press(&mut app, "y"), vec![Effect::Act(Action::Weight(api2(), 15))]);
    // An empty weight is refused with a reason.
    press(&mut app, "w");
    key(&mut app, KeyCode::Enter);
    assert_eq!(app.input, Input::Normal);
    assert_eq!(app.flash.as_ref().unwrap().kind, FlashKind::Error);
}

#[test]
fn without_a_token_actions_say_why_and_ask_nothing() {
    let mut app = App::new("http://n:9100", false);
    app.ingest_status(Ok(fixture()), NOW);
    press(&mut app, "2");
    for k in ["d", "m", "e", "w", "r"] {
        assert_eq!(press(&mut app, k), vec![]);
        assert_eq!(app.input, Input::Normal, "{k}");
        let flash = app.flash.clone().unwrap();
        assert_eq!(flash.kind, FlashKind::Error);
        assert!(flash.text.contains("no admin token") && flash.text.contains("--token-file"), "{}", flash.text);
    }
    // A node with writes off says so even when top holds a token.
    let mut app = self::app();
    let mut s = fixture();
    s.node.admin_writes = false;
    app.ingest_status(Ok(s), NOW);
    press(&mut app, "2d");
    assert!(app.flash.unwrap().text.contains("admin.token_file"));
}

#[test]
fn server_actions_need_the_backends_pane() {
    let mut app = app();
    assert_eq!(app.pane, Pane::Overview);
    press(&mut app, "d");
    assert_eq!(app.input, Input::Normal);
    assert!(app.flash.unwrap().text.contains("Backends pane"));
}

#[test]
fn panes_switch_by_number_and_tab_and_the_sessions_panes_poll_at_once() {
    let mut app = app();
    assert_eq!(press(&mut app, "3"), vec![]);
    assert_eq!(app.pane, Pane::Cluster);
    assert_eq!(press(&mut app, "4"), vec![Effect::Refresh]);
    assert!(app.wants_sessions());
    assert_eq!(press(&mut app, "4"), vec![], "no refresh when nothing changed");
    key(&mut app, KeyCode::Tab);
    assert_eq!(app.pane, Pane::Events);
    key(&mut app, KeyCode::Tab);
    assert_eq!(app.pane, Pane::Overview);
    key(&mut app, KeyCode::BackTab);
    assert_eq!(app.pane, Pane::Events);
    assert!(!app.wants_sessions());
    assert_eq!(press(&mut app, "q"), vec![Effect::Quit]);
    assert_eq!(app.on_key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)), Some(Effect::Quit));
}

#[test]
fn help_opens_with_question_mark_and_any_key_closes_it() {
    let mut app = app();
    press(&mut app, "?");
    assert_eq!(app.input, Input::Help);
    assert_eq!(press(&mut app, "q"), vec![], "q closes the help, it does not quit");
    assert_eq!(app.input, Input::Normal);
}

#[test]
fn search_box_looks_a_key_up_on_the_sessions_pane() {
    let mut app = app();
    press(&mut app, "4/");
    assert_eq!(app.input, Input::Search(String::new()));
    press(&mut app, "web-042");
    assert_eq!(app.filter, "", "searching is not filtering");
    assert_eq!(key(&mut app, KeyCode::Enter), Some(Effect::Lookup("web-042".into())));
    assert_eq!(app.lookup, Lookup::Pending("web-042".into()));
    app.ingest_lookup("web-042".into(), Ok(LookupAnswer::NotFound("no session for key \"web-042\"".into())));
    assert_eq!(app.lookup, Lookup::NotFound("web-042".into(), "no session for key \"web-042\"".into()));
    app.ingest_lookup("x".into(), Err("cannot reach".into()));
    assert_eq!(app.lookup, Lookup::Failed("x".into(), "cannot reach".into()));
}

#[test]
fn sessions_answers_are_kept_as_the_api_gave_them() {
    let mut app = app();
    let view: crate::api::SessionsView =
        serde_json::from_str(include_str!("../../tests/snapshots/sessions.json")).unwrap();
    app.ingest_sessions(Ok(SessionsAnswer::View(view.clone())));
    assert_eq!(app.sessions, SessionsData::View(view));
    app.ingest_sessions(Ok(SessionsAnswer::NoAffinity("no pool has affinity".into())));
    assert_eq!(app.sessions, SessionsData::NoAffinity("no pool has affinity".into()));
}

#[test]
fn primary_pools_show_the_first_server_that_takes_requests() {
    let app = app();
    let p = app.primary_pools();
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].0, "agents");
    assert_eq!(p[0].1.map(|s| s.name.as_str()), Some("ws-2"), "ws-1 is out");
    // Backups only when no other server is up.
    let mut s = fixture();
    s.pools[0].balance = "primary".into();
    s.pools[0].servers[0].state = "down".into();
    s.pools[0].servers[3].state = "up".into();
    let mut app = App::new("u", true);
    app.ingest_status(Ok(s), NOW);
    let p = app.primary_pools();
    assert_eq!(p[0].1.map(|s| s.name.as_str()), Some("api-4"));
    let mut s = fixture();
    s.pools[1].servers.iter_mut().for_each(|s| s.state = "down".into());
    app.ingest_status(Ok(s), NOW);
    assert_eq!(app.primary_pools()[0].1, None);
}

#[test]
fn events_scroll_within_the_list() {
    let mut app = app();
    press(&mut app, "5");
    press(&mut app, "jj");
    assert_eq!(app.events_offset, 2);
    key(&mut app, KeyCode::End);
    assert_eq!(app.events_offset, 5, "the last event stays on screen");
    key(&mut app, KeyCode::Home);
    assert_eq!(app.events_offset, 0);
}
