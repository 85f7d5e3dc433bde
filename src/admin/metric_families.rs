//! Every metric family `GET /metrics` exports, with its type, labels and
//! help text: the one description of the metrics. [`super::prometheus`]
//! writes each family's `# HELP` and `# TYPE` lines (and the label name of
//! one-label families) from here; `tests/tools/reference_docs.rs` generates
//! the table of `docs/src/reference-metrics.md` from [`FAMILIES`] and fails
//! when the committed page differs (`UPDATE_DOCS=1 cargo test --test tools
//! reference_docs` regenerates it), and `tests/tools/admin_examples.rs`
//! holds a real node's `/metrics` to it: every family once, with this type
//! and help, and these label names and values.
//!
//! The names themselves stay in [`crate::metrics`] (the contract, shared
//! with the data path). `help` is plain text on one line (it goes to
//! Prometheus as is); a label's `values` and a family's `note` are Markdown
//! for the book only.

use crate::metrics as m;

/// A Prometheus metric type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    /// The word of the `# TYPE` line.
    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// One label of a family (histograms' `le` is implied).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Label {
    pub name: &'static str,
    /// The values it takes, in Markdown: every fixed value in backticks
    /// (a test checks a real node's values against them); empty for
    /// labels whose values are names from the configuration.
    pub values: &'static str,
}

/// One metric family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Family {
    pub name: &'static str,
    pub kind: Kind,
    pub labels: &'static [Label],
    /// The `# HELP` text.
    pub help: &'static str,
    /// More for the book, after the help text (Markdown; may be empty).
    pub note: &'static str,
}

/// A label whose values are names (of pools, servers, zones, routes).
const fn named(name: &'static str) -> Label {
    Label { name, values: "" }
}

const POOL_SERVER: &[Label] = &[named("pool"), named("server")];

pub const ACTIVE_CONNECTIONS: Family = Family {
    name: m::ACTIVE_CONNECTIONS,
    kind: Kind::Gauge,
    labels: &[],
    help: "Client connections open now.",
    note: "Those that became WebSocket tunnels included.",
};
pub const WEBSOCKET_TUNNELS: Family = Family {
    name: m::WEBSOCKET_TUNNELS,
    kind: Kind::Gauge,
    labels: &[],
    help: "WebSocket tunnels open now.",
    note: "",
};
pub const TUNNEL_BUFFERED_BYTES: Family = Family {
    name: m::TUNNEL_BUFFERED_BYTES,
    kind: Kind::Gauge,
    labels: &[],
    help: "Bytes read from one side of a WebSocket tunnel and waiting for the other side to take them.",
    note: "The only buffers tunnels hold: an idle tunnel holds none, so this is 0 when no tunnel is moving data faster than its reader takes it.",
};
pub const REQUEST_DURATION: Family = Family {
    name: m::REQUEST_DURATION,
    kind: Kind::Histogram,
    labels: &[],
    help: "Time from request head to response head.",
    note: "",
};
pub const REQUESTS_TOTAL: Family = Family {
    name: m::REQUESTS_TOTAL,
    kind: Kind::Counter,
    labels: &[
        Label { name: "method", values: "`GET`, `HEAD`, `POST`, `PUT`, `DELETE`, `PATCH`, `OPTIONS`, else `OTHER`" },
        Label { name: "endpoint", values: "the route's name, or `unmatched`" },
    ],
    help: "Requests by method and endpoint (route name).",
    note: "Only the pairs counted at least once have a sample.",
};
pub const CPU_USAGE: Family = Family {
    name: m::CPU_USAGE,
    kind: Kind::Gauge,
    labels: &[],
    help: "CPU use of this process in percent of one core since the previous scrape.",
    note: "",
};
pub const MEMORY_USAGE: Family = Family {
    name: m::MEMORY_USAGE,
    kind: Kind::Gauge,
    labels: &[],
    help: "Resident memory of this process in bytes.",
    note: "",
};
pub const RETRIES_TOTAL: Family = Family {
    name: m::RETRIES_TOTAL,
    kind: Kind::Counter,
    labels: &[],
    help: "Requests sent again to another server.",
    note: "",
};
pub const MALFORMED_TOTAL: Family = Family {
    name: m::MALFORMED_TOTAL,
    kind: Kind::Counter,
    labels: &[Label {
        name: "reason",
        values: "`head`, `content_length`, `transfer_encoding`, `length_and_encoding`, `host`, `path`, \
                 `too_large`, `hyper`, `body`",
    }],
    help: "Requests refused as malformed (400, 431), by reason.",
    note: "See [Framing and security](reference-requests.md#framing-and-security).",
};
pub const MALFORMED_RESPONSES: Family = Family {
    name: m::MALFORMED_RESPONSES,
    kind: Kind::Counter,
    labels: &[Label {
        name: "reason",
        values: "`head`, `content_length`, `too_large`, `interim`, `unexpected_upgrade`, `chunked`: answers \
                 refused; `body_after_bodiless`, `bytes_after_body`: answers passed on whose connection was then \
                 closed instead of reused",
    }],
    help: "Servers' answers refused (502) or whose connection was not reused, by reason.",
    note: "",
};
pub const HEALTH_CHECKS: Family = Family {
    name: m::HEALTH_CHECKS,
    kind: Kind::Counter,
    labels: &[Label { name: "result", values: "`success`, `failure`" }],
    help: "Active health checks by result.",
    note: "",
};
pub const ACCEPT_ERRORS: Family = Family {
    name: m::ACCEPT_ERRORS,
    kind: Kind::Counter,
    labels: &[Label {
        name: "reason",
        values: "`descriptors`: out of file descriptors (`EMFILE`, `ENFILE`); `memory`: out of socket memory \
                 (`ENOBUFS`, `ENOMEM`); `other`",
    }],
    help: "Failed accepts of client connections, by reason.",
    note: "On `descriptors` or `memory` the listeners back off (10 ms doubling to 1 s) while clients wait in the \
           kernel's queue, log once per 10 s, and resume by themselves. A connection that the client closed \
           before it was accepted is not counted.",
};
pub const CLIENT_TIMEOUTS: Family = Family {
    name: m::CLIENT_TIMEOUTS,
    kind: Kind::Counter,
    labels: &[Label {
        name: "timeout",
        values: "`header`: a request head not complete within `limits.header_timeout`; `send`: a client that \
                 stopped reading a response for `limits.send_timeout`",
    }],
    help: "Client connections closed because the client was too slow, by timeout.",
    note: "Idle keep-alive connections closed at `keepalive_timeout` are not counted, nor a TLS handshake or \
           PROXY header that took longer than `header_timeout`.",
};
pub const TLS_HANDSHAKE: Family = Family {
    name: m::TLS_HANDSHAKE,
    kind: Kind::Histogram,
    labels: &[],
    help: "Time to complete a TLS handshake with a client.",
    note: "Handshakes that completed only.",
};
pub const TLS_HANDSHAKE_FAILURES: Family = Family {
    name: m::TLS_HANDSHAKE_FAILURES,
    kind: Kind::Counter,
    labels: &[],
    help: "TLS handshakes that failed or timed out.",
    note: "",
};
pub const RATELIMITED: Family = Family {
    name: m::RATELIMITED,
    kind: Kind::Counter,
    labels: &[named("zone")],
    help: "Requests refused by a rate-limit zone.",
    note: "A zone's count restarts from 0 when a reload changes the zone.",
};
pub const TUNNEL_BYTES: Family = Family {
    name: m::TUNNEL_BYTES,
    kind: Kind::Counter,
    labels: &[Label { name: "direction", values: "`up`: from clients, `down`: from servers" }],
    help: "Bytes through WebSocket tunnels, by direction.",
    note: "",
};
pub const TUNNELS_ENDED: Family = Family {
    name: m::TUNNELS_ENDED,
    kind: Kind::Counter,
    labels: &[Label {
        name: "reason",
        values: "`closed`: by the client or the server; `idle`: `tunnel_timeout` of silence; `half_closed`: one \
                 side closed and the other did not within `tunnel_fin_timeout`; `maintenance`: its server put in \
                 maintenance; `server_down`: its server marked down; `not_active`: its server no longer the active \
                 one of a `primary` pool; `shutdown`: the node stopping; `draining`: shed by a draining node \
                 (`ctl drain-node`); `upgrade`: shed by the old process of an in-place upgrade; `error`: a read or \
                 write failed",
    }],
    help: "WebSocket tunnels ended, by reason.",
    note: "See [Upgrading](upgrading.md) for `draining`.",
};
pub const AFFINITY: Family = Family {
    name: m::AFFINITY,
    kind: Kind::Counter,
    labels: &[Label {
        name: "result",
        values: "`hit`: pinned server used; `miss`: new key placed; `reassigned`: key moved because its server \
                 was unavailable, or after a retry",
    }],
    help: "Sticky-session lookups: hit, miss (new key) or reassigned.",
    note: "",
};
pub const BUSY_POLL: Family = Family {
    name: m::BUSY_POLL,
    kind: Kind::Counter,
    labels: &[Label {
        name: "event",
        values: "`turn`: a zero-timeout poll, `sleep`: a window without requests, `wait`: a coalescing wait",
    }],
    help: "Busy-poller events: turn (a zero-timeout poll), sleep, wait (coalescing).",
    note: "All 0 with `node.busy_poll` off. A node that polls shows a busy core in `sysmanage_cpu_usage_percent`.",
};
pub const SESSIONS: Family = Family {
    name: m::SESSIONS,
    kind: Kind::Gauge,
    labels: POOL_SERVER,
    help: "Live sticky sessions per server.",
    note: "Pools with `affinity` only.",
};
pub const STORE_PENDING: Family = Family {
    name: m::STORE_PENDING,
    kind: Kind::Gauge,
    labels: &[],
    help: "Session records waiting in memory because the session store cannot be written.",
    note: "Written as soon as the file can be (tried every 2 s). Pools with `affinity` only.",
};
pub const STORE_WRITE_ERRORS: Family = Family {
    name: m::STORE_WRITE_ERRORS,
    kind: Kind::Counter,
    labels: &[],
    help: "Failed commits (or reopenings) of the session store.",
    note: "A full disk or a read-only filesystem; the records are kept and retried. Pools with `affinity` only.",
};
pub const BACKEND_UP: Family = Family {
    name: m::BACKEND_UP,
    kind: Kind::Gauge,
    labels: POOL_SERVER,
    help: "1 if the server can take new requests, else 0.",
    note: "",
};
pub const BACKEND_ACTIVE: Family = Family {
    name: m::BACKEND_ACTIVE,
    kind: Kind::Gauge,
    labels: POOL_SERVER,
    help: "Requests and WebSocket tunnels in flight to the server.",
    note: "",
};
pub const BACKEND_REQUESTS: Family = Family {
    name: m::BACKEND_REQUESTS,
    kind: Kind::Counter,
    labels: &[named("pool"), named("server"), Label { name: "code", values: "`1xx` … `5xx`, `error` for no response" }],
    help: "Attempts sent to the server by response class (error: no response).",
    note: "",
};
pub const BACKEND_RESPONSE: Family = Family {
    name: m::BACKEND_RESPONSE,
    kind: Kind::Histogram,
    labels: POOL_SERVER,
    help: "Time from sending a request to the server's response head.",
    note: "",
};
pub const STATE_CHANGES: Family = Family {
    name: m::STATE_CHANGES,
    kind: Kind::Counter,
    labels: POOL_SERVER,
    help: "Health transitions of the server.",
    note: "",
};
pub const CLUSTER_NODES: Family = Family {
    name: m::CLUSTER_NODES,
    kind: Kind::Gauge,
    labels: &[Label { name: "state", values: "`live`, `joining`, `leaving`, `left`, `dead`" }],
    help: "Cluster members by state, this node included.",
    note: "A standalone node counts itself as one `live` member.",
};
pub const CLUSTER_SYNCING: Family = Family {
    name: m::CLUSTER_SYNCING,
    kind: Kind::Gauge,
    labels: &[],
    help: "1 while the session table is being fetched from a peer.",
    note: "",
};
pub const CLUSTER_STATE_BYTES: Family = Family {
    name: m::CLUSTER_STATE_BYTES,
    kind: Kind::Gauge,
    labels: &[],
    help: "Size of this node's gossip state (keys, values, versions).",
    note: "",
};
pub const CLUSTER_DATAGRAMS: Family = Family {
    name: m::CLUSTER_DATAGRAMS,
    kind: Kind::Counter,
    labels: &[Label { name: "direction", values: "`sent`, `received`" }],
    help: "Gossip datagrams sent and received.",
    note: "",
};
pub const CLUSTER_BYTES: Family = Family {
    name: m::CLUSTER_BYTES,
    kind: Kind::Counter,
    labels: &[Label { name: "direction", values: "`sent`, `received`" }],
    help: "Gossip bytes (sealed) sent and received.",
    note: "",
};
pub const CLUSTER_DROPPED: Family = Family {
    name: m::CLUSTER_DROPPED,
    kind: Kind::Counter,
    labels: &[Label {
        name: "reason",
        values: "`too_short`, `too_long`, `bad_version`, `unknown_key`, `auth_failed`, `malformed`, `stale`, \
                 `future`, `replayed`, `invalid_payload`",
    }],
    help: "Gossip datagrams dropped on receipt, by reason.",
    note: "`unknown_key` is a node with another cluster secret.",
};
pub const CLUSTER_SESSIONS: Family = Family {
    name: m::CLUSTER_SESSIONS,
    kind: Kind::Counter,
    labels: &[Label {
        name: "result",
        values: "`merged`: records from peers, by gossip or catch-up, that won over the one held; \
                 `not_gossiped`: records written here that the gossip queue had no room for",
    }],
    help: "Session records from peers that were applied, and records not gossiped (queue full).",
    note: "",
};

/// Every family, in the order of `/metrics`.
pub const FAMILIES: &[&Family] = &[
    &ACTIVE_CONNECTIONS,
    &WEBSOCKET_TUNNELS,
    &TUNNEL_BUFFERED_BYTES,
    &REQUEST_DURATION,
    &REQUESTS_TOTAL,
    &CPU_USAGE,
    &MEMORY_USAGE,
    &RETRIES_TOTAL,
    &MALFORMED_TOTAL,
    &MALFORMED_RESPONSES,
    &HEALTH_CHECKS,
    &ACCEPT_ERRORS,
    &CLIENT_TIMEOUTS,
    &TLS_HANDSHAKE,
    &TLS_HANDSHAKE_FAILURES,
    &RATELIMITED,
    &TUNNEL_BYTES,
    &TUNNELS_ENDED,
    &AFFINITY,
    &BUSY_POLL,
    &SESSIONS,
    &STORE_PENDING,
    &STORE_WRITE_ERRORS,
    &BACKEND_UP,
    &BACKEND_ACTIVE,
    &BACKEND_REQUESTS,
    &BACKEND_RESPONSE,
    &STATE_CHANGES,
    &CLUSTER_NODES,
    &CLUSTER_SYNCING,
    &CLUSTER_STATE_BYTES,
    &CLUSTER_DATAGRAMS,
    &CLUSTER_BYTES,
    &CLUSTER_DROPPED,
    &CLUSTER_SESSIONS,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_texts_are_one_plain_line() {
        for f in FAMILIES {
            assert!(!f.help.is_empty() && f.help.ends_with('.'), "{}: help {:?}", f.name, f.help);
            assert!(!f.help.contains(['\n', '\\', '`']), "{}: help must be plain text on one line", f.name);
        }
    }

    #[test]
    fn names_are_unique() {
        let mut names: Vec<&str> = FAMILIES.iter().map(|f| f.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), FAMILIES.len());
    }

    /// The malformed reasons are counted by index of these arrays: every
    /// one is documented, in the order the proxy counts them.
    #[test]
    fn malformed_reasons_are_all_documented() {
        for (family, reasons) in [
            (&MALFORMED_TOTAL, &m::MALFORMED_REQUEST_REASONS[..]),
            (&MALFORMED_RESPONSES, &m::MALFORMED_RESPONSE_REASONS[..]),
            (&TUNNELS_ENDED, &m::TUNNEL_END_REASONS[..]),
        ] {
            let values = family.labels[0].values;
            let mut at = 0;
            for r in reasons {
                let found = values[at..].find(&format!("`{r}`"));
                assert!(found.is_some(), "{}: reason {r} is not documented (in order)", family.name);
                at += found.unwrap_or(0);
            }
        }
    }
}
