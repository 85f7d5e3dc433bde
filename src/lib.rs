//! # sysmanage-node
//!
//! A load balancer for SysManage in one binary: HTTP/1.1, HTTP/2 and
//! WebSocket reverse proxy with passive health, in front of SysManage
//! servers. See `docs/ARCHITECTURE.md` and `../shared/DESIGN.md`.
//!
//! # Layout
//!
//! - [`cli`]: clap definitions.
//! - [`admin`]: the admin HTTP API (health, metrics, status, actions).
//! - [`api`]: serde types of the admin API, shared with its clients.
//! - [`app`]: composition root: load config, bind, spawn, signals, drain.
//! - [`ctl`]: `ctl` and `health` commands: clients of the admin API.
//! - [`tui`]: `top`, the terminal dashboard over the admin API.
//! - [`init`]: `init`: a commented config, secrets and a certificate.
//! - [`demo`]: `demo`: sample backends, three nodes and traffic on loopback.
//! - [`control`]: the single writer: reloads, admin actions, health tasks.
//! - [`proxy`]: listeners, per-request service, forwarding, static files.
//! - [`proxy_protocol`]: PROXY protocol v1/v2 header: read, parse, encode.
//! - [`state`]: the immutable snapshot the request path reads.
//! - [`tls`]: rustls server/upstream configs, SNI certificate store with
//!   hot reload, PEM loading, self-signed certificates.
//! - [`balance`]: selection algorithms, pure and synchronous.
//! - [`ratelimit`]: per-key rate-limit zones (token bucket, rolling window).
//! - [`health`]: server runtime state, active checks, passive health, events.
//! - [`sessions`]: affinity keys, session table, redb store, sweeper.
//! - [`cluster`]: gossip (chitchat) over an encrypted UDP transport, the
//!   cluster secret, gossip keys, members and typed change events.
//! - [`config`]: TOML → validated [`config::Config`] with located errors.
//! - [`metrics`]: lock-free counters and metric names.
//! - [`model`]: plain shared types.
//! - [`clock`]: monotonic milliseconds for atomics.

#![forbid(unsafe_code)]

pub mod admin;
pub mod api;
pub mod app;
pub mod balance;
pub mod busy_poll;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod control;
pub mod ctl;
pub mod demo;
pub mod health;
pub mod init;
pub mod metrics;
pub mod model;
pub mod proxy;
pub mod proxy_protocol;
pub mod ratelimit;
pub mod sessions;
pub mod state;
pub mod tls;
pub mod tui;
