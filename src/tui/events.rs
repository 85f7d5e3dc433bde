//! Events pane: the node's recent events (health transitions, passive
//! outliers, admin actions, reloads), newest first as the status API sends
//! them, filtered by `/` and scrolled with j/k. Times are UTC.

use ratatui::layout::Rect;
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph};
use ratatui::Frame;

use super::app::App;
use super::text::{dim, fit, header_style};

pub fn draw(f: &mut Frame, area: Rect, app: &App) {
    let rows = app.event_rows();
    let mut title = format!(" Events · newest first · {} shown · times UTC ", rows.len());
    if !app.filter.is_empty() {
        title.push_str(&format!("· filter \"{}\" ", app.filter));
    }
    let block = Block::bordered().title(title);
    let inner = block.inner(area);
    f.render_widget(block, area);
    let where_width = if inner.width >= 110 { 24 } else { 16 };
    let mut lines = vec![Line::styled(
        format!(" {} {} {} MESSAGE", fit("TIME", 8), fit("KIND", 8), fit("WHERE", where_width)),
        header_style(),
    )];
    if rows.is_empty() {
        let why = if app.filter.is_empty() {
            " no events yet".to_string()
        } else {
            format!(" no event matches the filter \"{}\" (Esc clears it)", app.filter)
        };
        lines.push(Line::styled(why, dim()));
    }
    // One line for the header, and one to say that newer events are hidden.
    let message_width = (inner.width as usize).saturating_sub(1 + 9 + 9 + where_width + 1);
    let height = inner.height.saturating_sub(if app.events_offset > 0 { 2 } else { 1 }) as usize;
    for e in rows.iter().skip(app.events_offset).take(height) {
        let place = match (&e.pool, &e.server) {
            (Some(p), Some(s)) => format!("{p}/{s}"),
            (Some(p), None) => p.clone(),
            _ => "-".to_string(),
        };
        let color = match e.kind.as_str() {
            "health" if e.message.starts_with("UP") => Color::Green,
            "health" | "passive" => Color::Red,
            "admin" => Color::Yellow,
            "reload" if e.message.starts_with("refused") => Color::Red,
            "reload" => Color::Cyan,
            _ => Color::Gray,
        };
        lines.push(Line::from(vec![
            Span::raw(format!(" {} ", super::text::clock(e.at_unix_ms))),
            Span::styled(fit(&e.kind, 8), Style::new().fg(color)),
            Span::raw(format!(" {} ", fit(&place, where_width))),
            Span::raw(fit(&e.message, message_width).trim_end().to_string()),
        ]));
    }
    if app.events_offset > 0 {
        lines.push(Line::styled(format!(" ({} newer above: k scrolls up)", app.events_offset), dim()));
    }
    f.render_widget(Paragraph::new(lines), inner);
}
