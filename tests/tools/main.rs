//! The binary and what ships with it: commands (`check-config`, `init`,
//! `cert`, `demo`, `top`), signals and logs of `run`, config errors and keys,
//! the man pages, the packaging files, the README and the book's reference.

#[path = "../support/mod.rs"]
mod support;

mod admin_examples;
mod binary;
mod book_links;
mod config_errors;
mod config_keys;
mod demo;
mod init;
mod man_pages;
mod man_prose;
mod packaging;
mod readme;
mod reference_docs;
mod tui_e2e;
mod tui_snapshots;
