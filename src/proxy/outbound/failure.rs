//! How a failed attempt is classified: whether it may be retried on
//! another server (`retry_on` lists its kind) and whether bytes of the
//! request may have reached the server.

use crate::config::PoolConfig;
use crate::proxy::error::ProxyError;
use crate::proxy::outbound::pool::ConnectError;
use crate::proxy::wire::response::HeadError;

/// Why an attempt failed.
pub(super) enum Failure {
    /// Try another server if the rules allow; `reached`: bytes of the request
    /// may have reached the server.
    Retryable { err: ProxyError, reached: bool, wanted: bool },
    /// Stop now with this error.
    Fatal(ProxyError),
}

pub(super) fn connect_failure(e: ConnectError, server: &str, cfg: &PoolConfig) -> Failure {
    match e {
        ConnectError::Timeout(d) => Failure::Retryable {
            err: ProxyError::Timeout { server: server.to_string(), timeout_ms: d.as_millis() as u64 },
            reached: false,
            wanted: cfg.retry_on.timeout,
        },
        other => Failure::Retryable {
            err: ProxyError::Connect { server: server.to_string(), detail: other.to_string() },
            reached: false,
            wanted: cfg.retry_on.error,
        },
    }
}

/// Writing the request failed; `written`: some of it reached the server.
pub(super) fn send_failure(err: std::io::Error, written: bool, server: &str, cfg: &PoolConfig) -> Failure {
    if err.kind() == std::io::ErrorKind::TimedOut {
        // send_timeout on the socket: the server stopped reading our request.
        return Failure::Retryable {
            err: ProxyError::Timeout { server: server.to_string(), timeout_ms: cfg.send_timeout.as_millis() as u64 },
            reached: written,
            wanted: cfg.retry_on.timeout,
        };
    }
    Failure::Retryable {
        err: ProxyError::Upstream { server: server.to_string(), detail: format!("sending the request: {err}") },
        reached: written,
        wanted: cfg.retry_on.error,
    }
}

/// Reading the response head failed.
pub(super) fn head_failure(e: HeadError, server: &str, cfg: &PoolConfig) -> Failure {
    match e {
        HeadError::Invalid { detail, .. } => Failure::Retryable {
            err: ProxyError::InvalidResponse { server: server.to_string(), detail },
            reached: true,
            wanted: cfg.retry_on.invalid_response || cfg.retry_on.error,
        },
        other => Failure::Retryable {
            err: ProxyError::Upstream { server: server.to_string(), detail: other.to_string() },
            reached: true,
            wanted: cfg.retry_on.error,
        },
    }
}

/// No response head within `read_timeout`.
pub(super) fn read_timeout(server: &str, cfg: &PoolConfig) -> Failure {
    Failure::Retryable {
        err: ProxyError::Timeout { server: server.to_string(), timeout_ms: cfg.read_timeout.as_millis() as u64 },
        reached: true,
        wanted: cfg.retry_on.timeout,
    }
}
