//! One small config for unit tests that need a parsed [`Config`]: a
//! listener, a rate-limit zone, two pools, and routes of each kind that
//! matching cares about (an exact path, a WebSocket prefix, a host and
//! method condition, a default).

use std::path::Path;

use super::{parse_str, Config};

pub const TOML: &str = r#"
[[listeners]]
name = "http"
bind = "127.0.0.1:0"

[[rate_limits]]
name = "login"
rate = "5/s"
burst = 10

[[pools]]
name = "api"
servers = [{ addr = "127.0.0.1:9" }, { addr = "127.0.0.1:10" }]

[[pools]]
name = "other"
servers = [{ addr = "127.0.0.1:11" }]

[[routes]]
name = "health"
path = "/health"
respond = { status = 200, body = "ok\n" }

[[routes]]
name = "ws"
path_prefix = "/api/agent/connect"
websocket = true
pool = "api"

[[routes]]
name = "admin-host"
path_prefix = "/"
host = "admin.example.com"
methods = ["GET"]
respond = { status = 204 }

[[routes]]
name = "default"
path_prefix = "/"
pool = "api"
"#;

/// [`TOML`], parsed.
pub fn config() -> Config {
    parse_str(TOML, "sample.toml", Path::new(".")).expect("the sample config is valid")
}

#[cfg(test)]
mod tests {
    use super::config;
    use crate::config::RateKind;
    use std::time::Duration;

    #[test]
    fn limits_read_as_an_operator_writes_them() {
        assert_eq!(config().rate_limits[0].kind.to_string(), "5/s burst 10");
        assert_eq!(RateKind::Bucket { per_second: 0.5, burst: 1 }.to_string(), "0.5/s burst 1");
        assert_eq!(RateKind::Window { limit: 100, window: Duration::from_secs(60) }.to_string(), "100 per 1m");
    }
}
