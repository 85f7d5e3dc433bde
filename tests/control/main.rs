//! Where a node sends traffic and how it is steered: balancing, health
//! checks, rate limits, sticky sessions, and the admin API.

#[path = "../support/mod.rs"]
mod support;

mod admin;
mod balancing;
mod ratelimit;
mod resources;
mod sessions;
mod stats_page;
