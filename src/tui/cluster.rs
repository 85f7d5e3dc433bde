//! Cluster pane: the members as this node sees them (state, `draining` for
//! a live member that drains, address,
//! generation, last heard, load, version), how many nodes see each server
//! up, and the active server of each `primary` pool. A standalone node says
//! so instead of inventing a membership table.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Wrap};
use ratatui::Frame;

use super::app::App;
use super::text::{self, dim, fit, fit_right, header_style};
use crate::api::{ClusterStatus, ServerStatus, Status};

fn member_state_style(state: &str) -> Style {
    match state {
        "live" => Style::new().fg(Color::Green),
        "joining" | "leaving" | "draining" => Style::new().fg(Color::Yellow),
        _ => Style::new().fg(Color::Red),
    }
}

fn members_lines(c: &ClusterStatus, wide: bool) -> Vec<Line<'static>> {
    let mut lines = vec![Line::from(vec![
        Span::raw(format!(" {} live, {} dead", c.live, c.dead)),
        if c.syncing {
            Span::styled("  syncing sessions from a peer", Style::new().fg(Color::Yellow))
        } else {
            Span::raw("")
        },
        Span::styled(
            format!("  gossip {}  dropped {} (auth {})", c.gossip_addr, c.datagrams_dropped, c.auth_failures),
            dim(),
        ),
    ])];
    let mut head = format!(" {} {} {} {}", fit("NAME", 14), fit("STATE", 8), fit("HEARD", 8), fit_right("CONNS", 6));
    if wide {
        head.push_str(&format!(" {} {} {}", fit("ADDRESS", 21), fit_right("GENERATION", 14), "VERSION"));
    }
    lines.push(Line::styled(head, header_style()));
    for m in &c.members {
        let name = if m.is_self { format!("{} *", m.name) } else { m.name.clone() };
        let heard = m.heard("");
        let conns = m.connections.map_or("-".to_string(), |n| n.to_string());
        let mut spans = vec![
            Span::raw(format!(" {} ", fit(&name, 14))),
            Span::styled(fit(m.shown_state(), 8), member_state_style(m.shown_state())),
            Span::raw(format!(" {} {}", fit(&heard, 8), fit_right(&conns, 6))),
        ];
        if wide {
            spans.push(Span::raw(format!(
                " {} {} {}",
                fit(&m.addr, 21),
                fit_right(&m.generation.to_string(), 14),
                m.version.as_deref().unwrap_or("-")
            )));
        }
        lines.push(Line::from(spans));
    }
    lines
}

/// Draws the pane: the members (or what a standalone node is) above; below,
/// how many nodes see each server up and the active server of each
/// `primary` pool.
pub fn draw(f: &mut Frame, area: Rect, app: &App, status: &Status) {
    let (members_height, lines) = match &status.cluster {
        Some(c) => {
            let lines = members_lines(c, area.width >= 100);
            ((lines.len() as u16 + 2).min(area.height / 2), lines)
        }
        None => (6, standalone_lines(app, status)),
    };
    let [members, primary] = Layout::vertical([Constraint::Length(members_height), Constraint::Min(4)]).areas(area);
    f.render_widget(bordered(lines, " Cluster "), members);

    let pools = app.primary_pools();
    let width = pools.iter().map(|(p, _)| p.chars().count()).max().unwrap_or(4).clamp(4, 24);
    let mut lines = if status.cluster.is_some() { votes_lines(app, status, width) } else { Vec::new() };
    lines.extend(primaries_lines(&pools, width, status.cluster.is_some()));
    f.render_widget(bordered(lines, " Servers and primaries "), primary);
}

/// A wrapped paragraph in a border with a title.
fn bordered(lines: Vec<Line<'static>>, title: &'static str) -> Paragraph<'static> {
    Paragraph::new(lines).wrap(Wrap { trim: false }).block(Block::bordered().title(title))
}

/// What a node without a `[cluster]` table shows instead of members: that it
/// is standalone, itself, and how to join a cluster.
fn standalone_lines(app: &App, status: &Status) -> Vec<Line<'static>> {
    let n = &status.node;
    vec![
        Line::styled(" standalone node: its config has no [cluster] table", Style::new().fg(Color::Yellow)),
        Line::from(vec![
            Span::raw(" members: this node only  "),
            Span::styled(n.name.clone(), header_style()),
            Span::raw(format!("  admin {}  up {}", app.admin_url, text::span(n.uptime_seconds))),
        ]),
        Line::styled(" Join a cluster: sysmanage-node join <peer> -c <config>", dim()),
    ]
}

/// For each pool (that the filter keeps), each server with how many nodes
/// see it up out of those reporting: green when all, yellow for a majority,
/// red otherwise.
fn votes_lines(app: &App, status: &Status, width: usize) -> Vec<Line<'static>> {
    let mut lines = vec![Line::styled(" servers seen up by the nodes:", header_style())];
    for p in status.pools.iter().filter(|p| super::app::matches_filter(&app.filter, &[&p.name])) {
        let mut spans = vec![Span::raw(format!(" {} ", fit(&p.name, width)))];
        for s in &p.servers {
            let (up, of) = (s.nodes_up.unwrap_or(0), s.nodes_reporting.unwrap_or(0));
            let style = if up == of {
                Style::new().fg(Color::Green)
            } else if up * 2 > of {
                Style::new().fg(Color::Yellow)
            } else {
                Style::new().fg(Color::Red)
            };
            spans.push(Span::raw(format!("{} ", s.name)));
            spans.push(Span::styled(format!("{up}/{of}  "), style));
        }
        lines.push(Line::from(spans));
    }
    lines.push(Line::raw(""));
    lines
}

/// The active server of each `primary` pool (or that none takes new
/// requests), then the rule that chose it: the cluster's majority, or this
/// node's own order.
fn primaries_lines(pools: &[(&str, Option<&ServerStatus>)], width: usize, clustered: bool) -> Vec<Line<'static>> {
    if pools.is_empty() {
        return vec![Line::styled(" no pool uses balance = \"primary\"", dim())];
    }
    let mut lines = vec![Line::styled(
        format!(" {} {} {} {}", fit("POOL", width), fit("ACTIVE SERVER", 20), fit("ADDR", 21), "STATE"),
        header_style(),
    )];
    for (pool, server) in pools {
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
    let rule = if clustered {
        " active: agreed by the majority of live nodes; stays until it fails (unless failback)"
    } else {
        " active: the first server in configured order that is up; stays until it fails (unless failback)"
    };
    lines.push(Line::styled(rule, dim()));
    lines
}
