//! Backends pane: per pool, its servers with state (coloured: up, down,
//! out, draining, maintenance), weight and effective weight, active
//! connections, sessions (when the sessions view has them), requests/s,
//! p95, the last check's result and latency, and consecutive failures. The
//! selected server is the target of d/m/e/w.
//!
//! Columns are laid out by hand rather than with a `Table` so a pool's
//! heading can span the whole width; wide terminals also get the address.

use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph};
use ratatui::Frame;

use super::app::{App, SessionsData};
use super::text::{self, dim, fit, fit_right, header_style};
use crate::api::{PoolStatus, ServerStatus, Status};

/// Width from which the address column is shown.
const WIDE: u16 = 110;

struct Column {
    title: &'static str,
    width: usize,
    right: bool,
}

const fn col(title: &'static str, width: usize, right: bool) -> Column {
    Column { title, width, right }
}

/// Every column but the server name, which takes what is left.
const FIXED: [Column; 8] = [
    col("STATE", 11, false),
    col("W/EFF", 6, true),
    col("ACT", 4, true),
    col("SESS", 5, true),
    col("REQ/S", 6, true),
    col("P95", 6, true),
    col("CHECK", 10, false),
    col("FAIL", 4, true),
];
const ADDR: Column = col("ADDR", 21, false);
const MARK: usize = 2;

pub fn draw(f: &mut Frame, area: Rect, app: &App, status: &Status) {
    let title = if app.filter.is_empty() {
        " Backends ".to_string()
    } else {
        format!(" Backends · filter \"{}\" ", app.filter)
    };
    let block = Block::bordered().title(title);
    let inner = block.inner(area);
    f.render_widget(block, area);
    let wide = area.width >= WIDE;
    let fixed: usize = FIXED.iter().map(|c| c.width + 1).sum::<usize>() + if wide { ADDR.width + 1 } else { 0 };
    let name_width = (inner.width as usize).saturating_sub(MARK + fixed).max(6);

    let mut header = vec![Span::raw(" ".repeat(MARK)), Span::styled(fit("SERVER", name_width), header_style())];
    if wide {
        header.push(Span::styled(format!(" {}", fit(ADDR.title, ADDR.width)), header_style()));
    }
    for c in &FIXED {
        let t = if c.right { fit_right(c.title, c.width) } else { fit(c.title, c.width) };
        header.push(Span::styled(format!(" {t}"), header_style()));
    }

    let rows = app.backend_rows();
    let selected = app.selected_index(&rows);
    let mut lines: Vec<Line> = Vec::new();
    let mut selected_line = 0;
    let mut last_pool = None;
    for (i, &(pi, si)) in rows.iter().enumerate() {
        let pool = &status.pools[pi];
        if last_pool != Some(pi) {
            if last_pool.is_some() {
                lines.push(Line::raw(""));
            }
            lines.push(pool_line(pool));
            last_pool = Some(pi);
        }
        if selected == Some(i) {
            selected_line = lines.len();
        }
        lines.push(server_line(app, pool, &pool.servers[si], name_width, wide, selected == Some(i)));
    }
    if lines.is_empty() {
        let why = if status.pools.is_empty() {
            " no pools configured".to_string()
        } else {
            format!(" no server matches the filter \"{}\" (Esc clears it)", app.filter)
        };
        lines.push(Line::styled(why, dim()));
    }
    // Scroll just enough to keep the selected server in view.
    let height = inner.height.saturating_sub(1) as usize;
    let offset = (selected_line + 1).saturating_sub(height);
    let mut shown = vec![Line::from(header)];
    shown.extend(lines.into_iter().skip(offset).take(height));
    f.render_widget(Paragraph::new(shown), inner);
}

fn pool_line(pool: &PoolStatus) -> Line<'static> {
    let color = if pool.available == 0 {
        Color::Red
    } else if pool.available < pool.total {
        Color::Yellow
    } else {
        Color::Green
    };
    Line::from(vec![
        Span::styled(format!(" pool {}", pool.name), header_style()),
        Span::raw(format!(" · {} · ", pool.balance)),
        Span::styled(format!("{}/{} available", pool.available, pool.total), Style::new().fg(color)),
    ])
}

fn sessions_of(app: &App, pool: &str, server: &str) -> String {
    match &app.sessions {
        SessionsData::View(v) => match v.pools.get(pool) {
            Some(per_server) => per_server.get(server).copied().unwrap_or(0).to_string(),
            None => "-".to_string(),
        },
        _ => "-".to_string(),
    }
}

fn server_line(
    app: &App,
    pool: &PoolStatus,
    s: &ServerStatus,
    name_width: usize,
    wide: bool,
    selected: bool,
) -> Line<'static> {
    let name = if s.backup { format!("{} (b)", s.name) } else { s.name.clone() };
    let (check, check_style) = match &s.last_check {
        None => ("-".to_string(), Style::new()),
        Some(c) if c.ok => (format!("ok {}", text::latency(Some(c.latency_ms))), Style::new().fg(Color::Green)),
        Some(c) => (format!("FAIL {}", text::latency(Some(c.latency_ms))), Style::new().fg(Color::Red)),
    };
    let fails_style = if s.consecutive_failures > 0 { Style::new().fg(Color::Red) } else { Style::new() };
    let values: [(String, Style); 8] = [
        (s.state.clone(), text::state_style(&s.state)),
        (format!("{}/{}", s.weight, s.effective_weight), Style::new()),
        (s.active_connections.to_string(), Style::new()),
        (sessions_of(app, &pool.name, &s.name), Style::new()),
        (text::rate(s.requests_per_second), Style::new()),
        (text::latency(s.p95_ms), Style::new()),
        (check, check_style),
        (s.consecutive_failures.to_string(), fails_style),
    ];
    let mark = if selected { "▶ " } else { "  " };
    let mut spans = vec![Span::raw(mark), Span::raw(fit(&name, name_width))];
    if wide {
        spans.push(Span::raw(format!(" {}", fit(&s.addr, ADDR.width))));
    }
    for (c, (v, style)) in FIXED.iter().zip(values) {
        let t = if c.right { fit_right(&v, c.width) } else { fit(&v, c.width) };
        spans.push(Span::raw(" "));
        spans.push(Span::styled(t, style));
    }
    let line = Line::from(spans);
    if selected {
        line.style(Style::new().bg(Color::DarkGray).add_modifier(Modifier::BOLD))
    } else {
        line
    }
}
