//! How values read on screen: durations, latencies, rates, clock times,
//! fixed-width columns and the colour of each server state. Shared by the
//! panes so a number looks the same everywhere.

use ratatui::style::{Color, Modifier, Style};

/// A latency: `0.42ms`, `4.8ms`, `123ms`, `1.20s`; `-` when unknown.
pub fn latency(ms: Option<f64>) -> String {
    match ms {
        None => "-".to_string(),
        Some(v) if v < 10.0 => format!("{v:.1}ms"),
        Some(v) if v < 1000.0 => format!("{v:.0}ms"),
        Some(v) => format!("{:.2}s", v / 1000.0),
    }
}

/// Requests per second: `0.0`, `12.5`, `1234`, `12.3k`.
pub fn rate(v: f64) -> String {
    if v < 100.0 {
        format!("{v:.1}")
    } else if v < 10_000.0 {
        format!("{v:.0}")
    } else {
        format!("{:.1}k", v / 1000.0)
    }
}

/// A share (0..1) as a percentage.
pub fn percent(v: f64) -> String {
    format!("{:.2}%", v * 100.0)
}

/// A span of seconds: `42s`, `5m 03s`, `2h 07m`, `3d 04h`.
pub fn span(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}d {h:02}h")
    } else if h > 0 {
        format!("{h}h {m:02}m")
    } else if m > 0 {
        format!("{m}m {s:02}s")
    } else {
        format!("{s}s")
    }
}

/// Clock time of a Unix timestamp, in UTC (the same on every operator's
/// screen and in every log): `14:03:27`.
pub fn clock(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    format!("{:02}:{:02}:{:02}", secs / 3600 % 24, secs / 60 % 60, secs % 60)
}

/// `s` cut or padded to exactly `width` characters (a cut ends in `…`).
pub fn fit(s: &str, width: usize) -> String {
    let n = s.chars().count();
    if n <= width {
        format!("{s:<width$}")
    } else if width == 0 {
        String::new()
    } else {
        let mut out: String = s.chars().take(width - 1).collect();
        out.push('…');
        out
    }
}

/// [`fit`], aligned right.
pub fn fit_right(s: &str, width: usize) -> String {
    let n = s.chars().count();
    if n <= width {
        format!("{s:>width$}")
    } else {
        fit(s, width)
    }
}

/// Colour of a server state as the status API names it.
pub fn state_style(state: &str) -> Style {
    let color = match state {
        "up" => Color::Green,
        "down" => Color::Red,
        "out" => Color::LightRed,
        "draining" => Color::Yellow,
        "maintenance" => Color::Blue,
        _ => Color::Gray,
    };
    let style = Style::new().fg(color);
    if state == "down" || state == "out" {
        style.add_modifier(Modifier::BOLD)
    } else {
        style
    }
}

pub fn header_style() -> Style {
    Style::new().add_modifier(Modifier::BOLD)
}

pub fn dim() -> Style {
    Style::new().fg(Color::DarkGray)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_read_compactly() {
        assert_eq!(latency(None), "-");
        assert_eq!(latency(Some(0.42)), "0.4ms");
        assert_eq!(latency(Some(123.4)), "123ms");
        assert_eq!(latency(Some(1234.0)), "1.23s");
        assert_eq!(rate(12.34), "12.3");
        assert_eq!(rate(20_000.0), "20.0k");
        assert_eq!(span(42), "42s");
        assert_eq!(span(303), "5m 03s");
        assert_eq!(span(7620), "2h 07m");
        assert_eq!(span(273_600), "3d 04h");
        assert_eq!(clock(1_700_000_000_000), "22:13:20");
        assert_eq!(fit("abcdef", 4), "abc…");
        assert_eq!(fit("ab", 4), "ab  ");
        assert_eq!(fit_right("ab", 4), "  ab");
    }
}
