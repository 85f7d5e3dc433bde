//! Overview pane: the node (name, version, uptime, config, listeners), its
//! traffic (requests/s, 5xx rate, p50/p95/p99 with sparklines over the
//! history the app keeps), the totals the status API reports, and one line
//! per pool.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Sparkline};
use ratatui::Frame;

use super::app::{App, Point};
use super::text::{self, dim};
use crate::api::Status;

const LABEL: u16 = 12;
const VALUE: u16 = 9;

pub fn draw(f: &mut Frame, area: Rect, app: &App, status: &Status) {
    // Taller sparklines when there is room for them.
    let spark_rows: u16 = if area.height >= 30 { 2 } else { 1 };
    let traffic_height = 2 + 5 * spark_rows + 2;
    let [node, traffic, pools] =
        Layout::vertical([Constraint::Length(4), Constraint::Length(traffic_height), Constraint::Min(3)]).areas(area);
    draw_node(f, node, app, status);
    draw_traffic(f, traffic, app, status, spark_rows);
    draw_pools(f, pools, status);
}

fn draw_node(f: &mut Frame, area: Rect, app: &App, status: &Status) {
    let n = &status.node;
    let writes = match (n.admin_writes, app.has_token) {
        (true, true) => Span::styled("on", Style::new().fg(Color::Green)),
        (true, false) => Span::styled("no token given to top", Style::new().fg(Color::Yellow)),
        (false, _) => Span::styled("off on this node", Style::new().fg(Color::Yellow)),
    };
    let listeners: Vec<String> = status.listeners.iter().map(|l| format!("{} {}", l.name, l.addr())).collect();
    let lines = vec![
        Line::from(vec![
            Span::styled(format!(" {}", n.name), text::header_style()),
            Span::raw(format!("  version {}  up {}  config ", n.version, text::span(n.uptime_seconds))),
            Span::raw(n.config_source.clone()),
        ]),
        Line::from(vec![
            Span::raw(format!(" listeners {}", if listeners.is_empty() { "-".into() } else { listeners.join(", ") })),
            Span::raw("  write actions "),
            writes,
        ]),
    ];
    f.render_widget(Paragraph::new(lines).block(Block::bordered().title(" Node ")), area);
}

/// One sparkline's data: the history spread over at most `width` columns,
/// oldest left, newest last; each column is the peak of the samples it
/// covers, so a spike stays visible.
pub fn series(history: &[Point], width: usize, value: impl Fn(&Point) -> Option<u64>) -> Vec<Option<u64>> {
    let (len, columns) = (history.len(), width.min(history.len()));
    (0..columns).map(|c| history[c * len / columns..(c + 1) * len / columns].iter().filter_map(&value).max()).collect()
}

fn draw_traffic(f: &mut Frame, area: Rect, app: &App, status: &Status, spark_rows: u16) {
    let history: Vec<Point> = app.history.iter().copied().collect();
    let covered = match (history.first(), history.last()) {
        (Some(a), Some(b)) if history.len() > 1 => {
            format!(", sparklines over the last {}", text::span((b.at_ms - a.at_ms) / 1000))
        }
        _ => String::new(),
    };
    let block = Block::bordered().title(format!(" Traffic · rates over the last 10 s{covered} "));
    let inner = block.inner(area);
    f.render_widget(block, area);
    let t = &status.totals;
    let us = |v: Option<f64>| v.map(|ms| (ms * 1000.0).round() as u64);
    type Metric<'a> = (&'a str, String, Box<dyn Fn(&Point) -> Option<u64>>, Color);
    let metrics: [Metric; 5] = [
        (
            "requests/s",
            text::rate(t.requests_per_second),
            Box::new(|p| Some((p.requests_per_second * 10.0) as u64)),
            Color::Cyan,
        ),
        ("5xx rate", text::percent(t.error_rate), Box::new(|p| Some((p.error_rate * 10_000.0) as u64)), Color::Red),
        ("p50", text::latency(t.p50_ms), Box::new(move |p| us(p.p50_ms)), Color::Green),
        ("p95", text::latency(t.p95_ms), Box::new(move |p| us(p.p95_ms)), Color::Yellow),
        ("p99", text::latency(t.p99_ms), Box::new(move |p| us(p.p99_ms)), Color::Magenta),
    ];
    let mut rows: Vec<Constraint> = metrics.iter().map(|_| Constraint::Length(spark_rows)).collect();
    rows.extend([Constraint::Length(1), Constraint::Length(1)]);
    let areas = Layout::vertical(rows).split(inner);
    for (i, (label, value, pick, color)) in metrics.iter().enumerate() {
        let [l, v, s] = Layout::horizontal([Constraint::Length(LABEL), Constraint::Length(VALUE), Constraint::Min(0)])
            .areas(areas[i]);
        f.render_widget(Paragraph::new(format!(" {label}")), l);
        f.render_widget(Paragraph::new(text::fit_right(value, VALUE as usize - 1)), v);
        let data = series(&history, s.width.saturating_sub(1) as usize, pick);
        f.render_widget(Sparkline::default().data(&data).style(Style::new().fg(*color)), s);
    }
    let rate_limited = t.rate_limited.map_or("-".to_string(), |n| n.to_string());
    let totals = Line::from(vec![Span::raw(format!(
        " requests {}  5xx {}  retries {}  rate-limited {}",
        t.requests, t.responses_5xx, t.retries, rate_limited
    ))]);
    let conns = Line::from(vec![
        Span::raw(format!(" connections {}  websocket tunnels {}", t.active_connections, t.websocket_tunnels)),
        Span::styled("  (counts since the node started)", dim()),
    ]);
    f.render_widget(Paragraph::new(totals), areas[5]);
    f.render_widget(Paragraph::new(conns), areas[6]);
}

fn draw_pools(f: &mut Frame, area: Rect, status: &Status) {
    let width = status.pools.iter().map(|p| p.name.chars().count()).max().unwrap_or(4).clamp(4, 20);
    let lines: Vec<Line> = status
        .pools
        .iter()
        .map(|p| {
            let color = if p.available == 0 {
                Color::Red
            } else if p.available < p.total {
                Color::Yellow
            } else {
                Color::Green
            };
            let mut others: Vec<String> = Vec::new();
            for state in ["down", "out", "draining", "maintenance"] {
                let n = p.servers.iter().filter(|s| s.state == state).count();
                if n > 0 {
                    others.push(format!("{n} {state}"));
                }
            }
            let mut spans = vec![
                Span::raw(format!(" {}  ", text::fit(&p.name, width))),
                Span::raw(format!("{:<12}", p.balance)),
                Span::styled(format!("{}/{} available", p.available, p.total), Style::new().fg(color)),
            ];
            if !others.is_empty() {
                spans.push(Span::raw(format!("  ({})", others.join(", "))));
            }
            Line::from(spans)
        })
        .collect();
    let lines = if lines.is_empty() { vec![Line::styled(" no pools configured", dim())] } else { lines };
    f.render_widget(Paragraph::new(lines).block(Block::bordered().title(" Pools ")), area);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pts(values: &[u64]) -> Vec<Point> {
        values
            .iter()
            .enumerate()
            .map(|(i, v)| Point {
                at_ms: i as u64 * 1000,
                requests_per_second: *v as f64,
                error_rate: 0.0,
                p50_ms: None,
                p95_ms: None,
                p99_ms: None,
            })
            .collect()
    }

    #[test]
    fn series_keeps_peaks_and_ends_on_the_newest_sample() {
        let rps = |p: &Point| Some(p.requests_per_second as u64);
        assert_eq!(series(&pts(&[1, 2, 3]), 10, rps), vec![Some(1), Some(2), Some(3)]);
        // 5 samples into 2 columns: 3 per column, the partial one first.
        assert_eq!(series(&pts(&[9, 1, 2, 3, 4]), 2, rps), vec![Some(9), Some(4)]);
        assert_eq!(series(&pts(&[1, 7, 2, 3, 4, 5]), 3, rps), vec![Some(7), Some(3), Some(5)]);
        assert_eq!(series(&pts(&[1, 2]), 0, rps), Vec::<Option<u64>>::new());
        assert_eq!(series(&pts(&[1, 2]), 4, |_| None), vec![None, None]);
    }
}
