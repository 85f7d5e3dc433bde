//! Parsing of the human units used in the config: durations (`"500ms"`, `"5s"`,
//! `"1h30m"`) and sizes (`"32MiB"`, `"512KiB"`, `"1024"`).
//!
//! Pure functions; the validator turns their `Err(String)` into a located
//! [`super::ConfigError`].

use std::time::Duration;

/// Parses a duration written as one or more `<number><unit>` parts, with units
/// `us`, `ms`, `s`, `m`, `h`, `d`. A bare `0` is accepted as zero.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let expected = "expected a duration such as \"500ms\", \"5s\", \"1m\" or \"1h30m\"";
    let s = text.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(format!("{expected}, got an empty string"));
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!("{expected}, got \"{text}\""));
        }
        let number: u64 =
            rest[..digits].parse().map_err(|_| format!("{expected}, got \"{text}\" (number too large)"))?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let micros_per_unit: u64 = match unit {
            "us" => 1,
            "ms" => 1_000,
            "s" => 1_000_000,
            "m" => 60_000_000,
            "h" => 3_600_000_000,
            "d" => 86_400_000_000,
            "" => return Err(format!("{expected}: \"{text}\" has no unit")),
            other => return Err(format!("{expected}: unknown unit \"{other}\" in \"{text}\"")),
        };
        let part =
            number.checked_mul(micros_per_unit).ok_or_else(|| format!("{expected}, got \"{text}\" (too large)"))?;
        total = total
            .checked_add(Duration::from_micros(part))
            .ok_or_else(|| format!("{expected}, got \"{text}\" (too large)"))?;
    }
    Ok(total)
}

/// Parses a size in bytes: a bare number, or a number with `B`, `KB`, `MB`,
/// `GB` (powers of 1000) or `KiB`, `MiB`, `GiB` (powers of 1024), `k`/`m`/`g`
/// as nginx writes them (powers of 1024).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let expected = "expected a size such as \"32MiB\", \"512KiB\", \"10MB\" or a number of bytes";
    let s = text.trim();
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    if digits == 0 {
        return Err(format!("{expected}, got \"{text}\""));
    }
    let number: u64 = s[..digits].parse().map_err(|_| format!("{expected}, got \"{text}\" (number too large)"))?;
    let multiplier: u64 = match s[digits..].trim() {
        "" | "B" => 1,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "KiB" | "k" | "K" => 1 << 10,
        "MiB" | "m" | "M" => 1 << 20,
        "GiB" | "g" | "G" => 1 << 30,
        other => return Err(format!("{expected}: unknown unit \"{other}\" in \"{text}\"")),
    };
    number.checked_mul(multiplier).ok_or_else(|| format!("{expected}, got \"{text}\" (too large)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration("10us").unwrap(), Duration::from_micros(10));
        assert_eq!(parse_duration("1ms500us").unwrap(), Duration::from_micros(1500));
        assert!(parse_duration("18446744073709551615d").unwrap_err().contains("too large"));
        assert!(parse_duration("5").unwrap_err().contains("has no unit"));
        assert!(parse_duration("5x").unwrap_err().contains("unknown unit \"x\""));
        assert!(parse_duration("").unwrap_err().contains("empty"));
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("99999999999999999999s").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("32MiB").unwrap(), 32 << 20);
        assert_eq!(parse_size("10MB").unwrap(), 10_000_000);
        assert_eq!(parse_size("1024").unwrap(), 1024);
        assert_eq!(parse_size("8k").unwrap(), 8192);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("3 parsecs").unwrap_err().contains("unknown unit"));
    }
}
