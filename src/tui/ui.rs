//! The frame around the panes: title bar (node, link state), tabs, footer
//! (key hints, prompts, the last action's answer), the unreachable-node
//! banner, and the help and confirmation pop-ups. Draws from [`App`] only,
//! so the same call renders the real terminal and the snapshot tests'
//! `TestBackend`.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph, Tabs, Wrap};
use ratatui::Frame;

use super::app::{App, FlashKind, Input, Link, Pane};
use super::text::{self, dim};
use super::{backends, cluster, events, overview, sessions};

/// The smallest terminal the layout is made for.
pub const MIN_WIDTH: u16 = 80;
pub const MIN_HEIGHT: u16 = 24;

pub fn draw(f: &mut Frame, app: &App) {
    let area = f.area();
    if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
        let msg = format!(
            "terminal too small: {}×{}; sysmanage-node top needs {MIN_WIDTH}×{MIN_HEIGHT} (q quits)",
            area.width, area.height
        );
        f.render_widget(Paragraph::new(msg).wrap(Wrap { trim: true }), area);
        return;
    }
    let [title, tabs, body, footer] =
        Layout::vertical([Constraint::Length(1), Constraint::Length(1), Constraint::Min(0), Constraint::Length(1)])
            .areas(area);
    draw_title(f, title, app);
    draw_tabs(f, tabs, app);
    draw_body(f, body, app);
    draw_footer(f, footer, app);
    match &app.input {
        Input::Help => draw_help(f, area),
        Input::Confirm(action) => {
            let lines = vec![
                Line::styled(action.question(), Style::new().add_modifier(Modifier::BOLD)),
                Line::raw(""),
                Line::raw(action.consequence()),
                Line::raw(""),
                Line::from(vec![
                    Span::styled("y", Style::new().fg(Color::Green).add_modifier(Modifier::BOLD)),
                    Span::raw(" yes    "),
                    Span::styled("n", Style::new().fg(Color::Red).add_modifier(Modifier::BOLD)),
                    Span::raw(" no"),
                ]),
            ];
            popup(f, area, " Confirm ", lines, 62);
        }
        _ => {}
    }
}

fn draw_title(f: &mut Frame, area: Rect, app: &App) {
    let bar = Style::new().bg(Color::Blue).fg(Color::White);
    let mut left = vec![Span::styled(" sysmanage-node top", bar.add_modifier(Modifier::BOLD))];
    if let Some(s) = &app.status {
        left.push(Span::styled(
            format!(" │ {} │ v{} │ up {}", s.node.name, s.node.version, text::span(s.node.uptime_seconds)),
            bar,
        ));
        if s.node.drain.draining {
            left.push(Span::styled(" │ DRAINING", bar.fg(Color::Yellow).add_modifier(Modifier::BOLD)));
        }
    }
    let (link, link_style) = match &app.link {
        Link::Connecting => ("… connecting".to_string(), bar.fg(Color::Yellow)),
        Link::Live => ("● live".to_string(), bar.fg(Color::LightGreen)),
        Link::Unreachable { .. } => ("✖ unreachable".to_string(), bar.fg(Color::LightRed).add_modifier(Modifier::BOLD)),
    };
    let url = format!("{}  ", app.admin_url);
    let used: usize = left.iter().map(|s| s.content.chars().count()).sum();
    let room = (area.width as usize).saturating_sub(used + link.chars().count() + 1);
    let url = if url.chars().count() <= room { url } else { String::new() };
    left.push(Span::styled(" ".repeat(room - url.chars().count()), bar));
    left.push(Span::styled(url, bar));
    left.push(Span::styled(link, link_style));
    left.push(Span::styled(" ", bar));
    f.render_widget(Paragraph::new(Line::from(left)).style(bar), area);
}

fn draw_tabs(f: &mut Frame, area: Rect, app: &App) {
    let titles: Vec<String> = Pane::ALL.iter().enumerate().map(|(i, p)| format!("{} {}", i + 1, p.title())).collect();
    let tabs = Tabs::new(titles)
        .select(app.pane.index())
        .highlight_style(Style::new().fg(Color::Black).bg(Color::Cyan).add_modifier(Modifier::BOLD))
        .divider("│");
    f.render_widget(tabs, area);
}

fn draw_body(f: &mut Frame, area: Rect, app: &App) {
    let mut area = area;
    if let Link::Unreachable { error, since_ms } = &app.link {
        let down_for = text::span(app.now_ms.saturating_sub(*since_ms) / 1000);
        let stale = match app.stale_seconds() {
            Some(s) => format!("; showing what it said {} ago", text::span(s)),
            None => String::new(),
        };
        let headline = Paragraph::new(format!(" ✖ node unreachable for {down_for}, retrying every second{stale}"))
            .style(Style::new().fg(Color::LightRed).add_modifier(Modifier::BOLD));
        // The error, wrapped under the headline and indented.
        let detail = Paragraph::new(error.as_str()).style(Style::new().fg(Color::LightRed)).wrap(Wrap { trim: true });
        let inside = if app.status.is_none() {
            let block = Block::bordered().title(" No data yet ");
            let inner = block.inner(area);
            f.render_widget(block, area);
            inner
        } else {
            let [banner, rest] = Layout::vertical([Constraint::Length(3), Constraint::Min(0)]).areas(area);
            area = rest;
            banner
        };
        let [top, below] = Layout::vertical([Constraint::Length(1), Constraint::Min(0)]).areas(inside);
        f.render_widget(headline, top);
        f.render_widget(detail, Rect { x: below.x + 3, width: below.width.saturating_sub(4), ..below });
        if app.status.is_none() {
            return;
        }
    }
    let Some(status) = &app.status else {
        let msg = format!(" waiting for the first answer from {} …", app.admin_url);
        f.render_widget(Paragraph::new(msg).style(dim()).block(Block::bordered()), area);
        return;
    };
    match app.pane {
        Pane::Overview => overview::draw(f, area, app, status),
        Pane::Backends => backends::draw(f, area, app, status),
        Pane::Cluster => cluster::draw(f, area, app, status),
        Pane::Sessions => sessions::draw(f, area, app, status),
        Pane::Events => events::draw(f, area, app),
    }
}

/// Key hints, shortest last; the first that fits is shown.
fn hints(app: &App) -> [String; 2] {
    let slash = if app.pane == Pane::Sessions { "/ search" } else { "/ filter" };
    [
        format!(" 1-5 pane  ↑↓ select  d drain  m maint  e enable  w weight  r reload  {slash}  ? help  q quit"),
        format!(" d drain  m maint  e enable  w weight  r reload  {slash}  ? help  q quit"),
    ]
}

fn draw_footer(f: &mut Frame, area: Rect, app: &App) {
    let cursor = Style::new().fg(Color::Cyan);
    let line = match &app.input {
        Input::Filter => Line::from(vec![
            Span::raw(" filter: "),
            Span::styled(format!("{}▏", app.filter), cursor),
            Span::styled("  Enter keeps it · Esc clears it", dim()),
        ]),
        Input::Search(text) => Line::from(vec![
            Span::raw(" session key: "),
            Span::styled(format!("{text}▏"), cursor),
            Span::styled("  Enter looks it up · Esc cancels", dim()),
        ]),
        Input::Weight { target, text } => Line::from(vec![
            Span::raw(format!(" new weight for {target}: ")),
            Span::styled(format!("{text}▏"), cursor),
            Span::styled("  Enter · Esc cancels", dim()),
        ]),
        Input::Confirm(_) => Line::styled(" y confirms · n cancels", dim()),
        Input::Help => Line::styled(" any key closes the help", dim()),
        Input::Normal => match &app.flash {
            Some(flash) => {
                let style = match flash.kind {
                    FlashKind::Info => Style::new(),
                    FlashKind::Success => Style::new().fg(Color::Green),
                    FlashKind::Error => Style::new().fg(Color::LightRed),
                };
                Line::styled(format!(" {}", flash.text), style)
            }
            None => {
                let [long, short] = hints(app);
                let fits = long.chars().count() <= area.width as usize;
                Line::styled(if fits { long } else { short }, dim())
            }
        },
    };
    f.render_widget(Paragraph::new(line), area);
}

const HELP: [(&str, &str); 12] = [
    ("1-5 Tab ←/→", "switch pane"),
    ("↑/↓ k/j", "select a server (Backends), scroll (Events)"),
    ("PgUp PgDn g G", "move further, to the first, to the last"),
    ("d", "drain the selected server: open work finishes"),
    ("m", "maintenance: no traffic at all"),
    ("e", "enable it again"),
    ("w", "set its weight (until the next reload)"),
    ("r", "reload the node's config file"),
    ("/", "filter Backends, Cluster, Events; search a key on Sessions"),
    ("Esc", "clear the filter"),
    ("?", "this help"),
    ("q Ctrl-C", "quit"),
];

fn draw_help(f: &mut Frame, area: Rect) {
    let mut lines: Vec<Line> = HELP
        .iter()
        .map(|(k, what)| {
            Line::from(vec![
                Span::styled(format!(" {k:<14}"), Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD)),
                Span::raw(*what),
            ])
        })
        .collect();
    lines.push(Line::raw(""));
    lines.push(Line::styled(" Actions ask y/n first and need the admin token (--token-file).", dim()));
    popup(f, area, " Keys ", lines, 76);
}

/// A bordered box in the middle of `area`, over what is drawn there.
fn popup(f: &mut Frame, area: Rect, title: &str, lines: Vec<Line>, width: u16) {
    let width = width.min(area.width.saturating_sub(2));
    let height = (lines.len() as u16 + 2).min(area.height);
    let rect = Rect { x: area.x + (area.width - width) / 2, y: area.y + (area.height - height) / 2, width, height };
    f.render_widget(Clear, rect);
    f.render_widget(
        Paragraph::new(lines).wrap(Wrap { trim: false }).block(Block::bordered().title(title.to_string())),
        rect,
    );
}
