//! Why a proxied request failed, where the fault lies, and what the client
//! is told. The kind decides both the status code and whether another server
//! may be tried.

use http::StatusCode;

/// Who caused a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Client,
    Upstream,
    Internal,
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("no server available in pool {pool}")]
    NoServer { pool: String },
    #[error("connecting to {server}: {detail}")]
    Connect { server: String, detail: String },
    #[error("{server} did not answer within {timeout_ms} ms")]
    Timeout { server: String, timeout_ms: u64 },
    #[error("{server} sent an invalid response: {detail}")]
    InvalidResponse { server: String, detail: String },
    #[error("{server} failed after the request was sent: {detail}")]
    Upstream { server: String, detail: String },
    #[error("request body larger than {limit} bytes")]
    BodyTooLarge { limit: u64 },
    #[error("client request body failed: {detail}")]
    ClientBody { detail: String },
    #[error("the client sent no body data for {after:?} (body_timeout)")]
    ClientTimeout { after: std::time::Duration },
    #[error("no usable session key: {reason}")]
    MissingSessionId { reason: String },
}

impl ProxyError {
    pub fn source_side(&self) -> Source {
        match self {
            ProxyError::NoServer { .. } => Source::Internal,
            ProxyError::BodyTooLarge { .. }
            | ProxyError::ClientBody { .. }
            | ProxyError::ClientTimeout { .. }
            | ProxyError::MissingSessionId { .. } => Source::Client,
            _ => Source::Upstream,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoServer { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::ClientBody { .. } => StatusCode::BAD_REQUEST,
            ProxyError::ClientTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            ProxyError::MissingSessionId { .. } => StatusCode::BAD_REQUEST,
            _ => StatusCode::BAD_GATEWAY,
        }
    }

    /// Short text for the client; details stay in the log.
    pub fn client_message(&self) -> &'static str {
        match self {
            ProxyError::NoServer { .. } => "503 Service Unavailable: no server available\n",
            ProxyError::Timeout { .. } => "504 Gateway Timeout: the server did not answer in time\n",
            ProxyError::BodyTooLarge { .. } => "413 Payload Too Large: request body exceeds the limit\n",
            ProxyError::ClientBody { .. } => "400 Bad Request: the request body could not be read\n",
            ProxyError::ClientTimeout { .. } => "408 Request Timeout: the request body stopped arriving\n",
            ProxyError::MissingSessionId { .. } => "Missing session ID\n",
            _ => "502 Bad Gateway: the server failed to answer\n",
        }
    }

    /// Short label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            ProxyError::NoServer { .. } => "no_server",
            ProxyError::Connect { .. } => "connect",
            ProxyError::Timeout { .. } => "timeout",
            ProxyError::InvalidResponse { .. } => "invalid_response",
            ProxyError::Upstream { .. } => "upstream",
            ProxyError::BodyTooLarge { .. } => "body_too_large",
            ProxyError::ClientBody { .. } => "client_body",
            ProxyError::ClientTimeout { .. } => "client_timeout",
            ProxyError::MissingSessionId { .. } => "missing_session_id",
        }
    }
}
