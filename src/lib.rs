//! # sysmanage-node
//!
//! A load balancer for SysManage in one binary: HTTP/1.1, HTTP/2 and
//! WebSocket reverse proxy with passive health, in front of SysManage
//! servers. See `docs/ARCHITECTURE.md` and `../shared/DESIGN.md`.
//!
//! # Layout
//!
//! Two kinds of modules: the node, and the tools that talk to it.
//!
//! **The node.** [`runtime`] starts one ([`runtime::Node`]) and waits for
//! signals; [`proxy`] is the data plane (inbound → route → outbound, with
//! [`proxy::wire`] owning HTTP/1.1 on the wire); [`control`] is the single
//! writer (reloads, admin actions, health tasks, the cluster's replication)
//! that publishes the immutable [`state::Snapshot`] the request path reads;
//! [`cluster`] gossips over an encrypted UDP transport; [`sessions`] holds
//! the sticky sessions (table, redb store, sweeper); [`health`] the servers'
//! runtime state, active checks and passive health; [`admin`] the admin HTTP
//! API; [`config`] turns TOML into a validated [`config::Config`]. Below
//! them: [`tls`], [`ratelimit`], [`balance`], [`proxy_protocol`],
//! [`metrics`], [`busy_poll`], [`model`], [`clock`].
//!
//! **The tools.** [`app`] dispatches the command line ([`cli`]): `run` and
//! `join` go to [`runtime`]; [`ctl`] (`ctl`, `health`) and [`tui`] (`top`)
//! are clients of the admin API (its types are [`api`]); [`init`] writes a
//! first configuration; [`demo`] starts sample backends, three nodes and
//! traffic on loopback.
//!
//! Which module may use which is written down in `docs/ARCHITECTURE.md` and
//! checked by `tests/architecture.rs`.

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
pub mod runtime;
pub mod sessions;
pub mod state;
pub mod tls;
pub mod tui;
pub mod upgrade;
