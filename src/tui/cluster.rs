//! Cluster pane. Clustering is not built yet, so the status API has no
//! members: the pane says the node is standalone rather than inventing a
//! membership table, and shows which server each `primary` pool uses now
//! (derived from the status in [`App::primary_pools`]).

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Wrap};
use ratatui::Frame;

use super::app::App;
use super::text::{self, dim, fit, header_style};
use crate::api::Status;

pub fn draw(f: &mut Frame, area: Rect, app: &App, status: &Status) {
    let [members, primary] = Layout::vertical([Constraint::Length(7), Constraint::Min(4)]).areas(area);
    let n = &status.node;
    let lines = vec![
        Line::styled(" standalone node: clustering is not available in this version", Style::new().fg(Color::Yellow)),
        Line::raw(""),
        Line::from(vec![
            Span::raw(" members: this node only  "),
            Span::styled(n.name.clone(), header_style()),
            Span::raw(format!("  admin {}  up {}", app.admin_url, text::span(n.uptime_seconds))),
        ]),
        Line::styled(" Health, sessions and events shown here are this node's own view.", dim()),
    ];
    f.render_widget(
        Paragraph::new(lines).wrap(Wrap { trim: false }).block(Block::bordered().title(" Cluster ")),
        members,
    );

    let pools = app.primary_pools();
    let width = pools.iter().map(|(p, _)| p.chars().count()).max().unwrap_or(4).clamp(4, 24);
    let mut lines = Vec::new();
    if pools.is_empty() {
        lines.push(Line::styled(" no pool uses balance = \"primary\"", dim()));
    } else {
        lines.push(Line::styled(
            format!(" {} {} {} {}", fit("POOL", width), fit("CURRENT SERVER", 20), fit("ADDR", 21), "STATE"),
            header_style(),
        ));
        for (pool, server) in &pools {
            let line = match server {
                Some(s) => Line::from(vec![
                    Span::raw(format!(" {} {} {} ", fit(pool, width), fit(&s.name, 20), fit(&s.addr, 21))),
                    Span::styled(s.state.clone(), text::state_style(&s.state)),
                    Span::raw(if s.backup { " (backup)" } else { "" }),
                ]),
                None => Line::from(vec![
                    Span::raw(format!(" {} ", fit(pool, width))),
                    Span::styled("none: no server takes new requests", Style::new().fg(Color::Red)),
                ]),
            };
            lines.push(line);
        }
        lines.push(Line::raw(""));
        lines.push(Line::styled(" current: the first server, in configured order, that takes new requests", dim()));
    }
    f.render_widget(
        Paragraph::new(lines).wrap(Wrap { trim: false }).block(Block::bordered().title(" Primary pools ")),
        primary,
    );
}
