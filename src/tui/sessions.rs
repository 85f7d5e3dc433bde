//! Sessions pane: live sessions per server for each pool with affinity
//! (`GET /api/v1/sessions`), and a search box (`/`) that looks one key up
//! (`GET /api/v1/sessions?key=K`). When no pool has affinity the API says so
//! with a 404, and so does the pane.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Wrap};
use ratatui::Frame;

use super::app::{App, Input, Lookup, SessionsData};
use super::text::{self, dim, fit, fit_right, header_style};
use crate::api::{SessionRecordView, SessionsView, Status};

const BAR: usize = 20;

pub fn draw(f: &mut Frame, area: Rect, app: &App, status: &Status) {
    let [search, counts] = Layout::vertical([Constraint::Length(5), Constraint::Min(3)]).areas(area);
    draw_search(f, search, app);
    let (title, lines) = match &app.sessions {
        SessionsData::Unknown => (" Sessions ".to_string(), vec![Line::styled(" loading…", dim())]),
        SessionsData::NoAffinity(message) => (
            " Sessions ".to_string(),
            vec![
                Line::raw(format!(" {message}")),
                Line::styled(" Sticky sessions need `affinity = { key = ... }` on a pool.", dim()),
            ],
        ),
        SessionsData::Failed(e) => (
            " Sessions ".to_string(),
            vec![Line::styled(format!(" cannot read the sessions: {e}"), Style::new().fg(Color::Red))],
        ),
        SessionsData::View(v) => {
            (format!(" Sessions per server · {} records in the table ", v.total), counts_lines(v, status))
        }
    };
    f.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }).block(Block::bordered().title(title)), counts);
}

fn draw_search(f: &mut Frame, area: Rect, app: &App) {
    let mut lines = Vec::new();
    match &app.input {
        Input::Search(text) => lines.push(Line::from(vec![
            Span::raw(" key: "),
            Span::styled(format!("{text}▏"), Style::new().fg(Color::Cyan)),
        ])),
        _ => lines.push(Line::styled(" press / and type a key (e.g. an agent's hostname), Enter looks it up", dim())),
    }
    match &app.lookup {
        Lookup::None => {}
        Lookup::Pending(key) => lines.push(Line::styled(format!(" looking up \"{key}\"…"), dim())),
        Lookup::Found(key, records) => {
            for r in records.iter().take(2) {
                lines.push(record_line(app, key, r));
            }
            if records.len() > 2 {
                lines.push(Line::styled(format!(" and {} more pools", records.len() - 2), dim()));
            }
        }
        Lookup::NotFound(_, message) => lines.push(Line::styled(format!(" {message}"), Style::new().fg(Color::Yellow))),
        Lookup::Failed(key, e) => {
            lines.push(Line::styled(format!(" looking up \"{key}\" failed: {e}"), Style::new().fg(Color::Red)))
        }
    }
    f.render_widget(
        Paragraph::new(lines).wrap(Wrap { trim: false }).block(Block::bordered().title(" Look up a session key ")),
        area,
    );
}

fn record_line(app: &App, key: &str, r: &SessionRecordView) -> Line<'static> {
    let expires = r.expires_at_unix_ms.saturating_sub(app.now_ms) / 1000;
    Line::from(vec![
        Span::styled(format!(" {key}"), header_style()),
        Span::raw(format!(" → {}/", r.pool)),
        Span::styled(r.server.clone(), Style::new().fg(Color::Green)),
        Span::raw(format!("  expires in {}  origin {}  version {}", text::span(expires), r.origin, r.version)),
    ])
}

fn counts_lines(v: &SessionsView, status: &Status) -> Vec<Line<'static>> {
    if v.pools.is_empty() {
        return vec![Line::styled(" no pool has affinity", dim())];
    }
    let mut lines = vec![Line::styled(
        format!(" {} {} {} {}", fit("POOL", 10), fit("SERVER", 16), fit_right("SESSIONS", 8), "SHARE"),
        header_style(),
    )];
    for (pool, per_server) in &v.pools {
        // Every server of the pool, in configured order, with zero where the
        // table has none; then any the table names that the config no longer has.
        let mut servers: Vec<(String, usize, &str)> = Vec::new();
        if let Some(p) = status.pools.iter().find(|p| &p.name == pool) {
            for s in &p.servers {
                servers.push((s.name.clone(), per_server.get(&s.name).copied().unwrap_or(0), s.state.as_str()));
            }
        }
        for (name, n) in per_server {
            if !servers.iter().any(|(s, _, _)| s == name) {
                servers.push((name.clone(), *n, "gone"));
            }
        }
        let total: usize = servers.iter().map(|(_, n, _)| n).sum();
        for (name, n, state) in servers {
            let filled = if total == 0 { 0 } else { (n * BAR).div_ceil(total).min(BAR) };
            let share = if total == 0 { 0.0 } else { n as f64 / total as f64 };
            lines.push(Line::from(vec![
                Span::raw(format!(" {} {} {} ", fit(pool, 10), fit(&name, 16), fit_right(&n.to_string(), 8))),
                Span::styled("█".repeat(filled), Style::new().fg(Color::Cyan)),
                Span::styled("░".repeat(BAR - filled), dim()),
                Span::raw(format!(" {:>3.0}%  ", share * 100.0)),
                Span::styled(state.to_string(), text::state_style(state)),
            ]));
        }
    }
    lines
}
