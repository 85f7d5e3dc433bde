//! Node configs for tests, as TOML text built table by table, so that the
//! common ones take a line or two:
//!
//! ```ignore
//! let toml = NodeToml::new().listener("http", "").pool("p", &servers(&[(&b, "")])).route("all", "/", "p", "");
//! let node = start_node(&toml.to_string()).await;
//! ```
//!
//! [`config`], [`config_admin`] and [`config_listeners`] are the most common
//! shape: one pool "p" behind a default route.

use std::fmt;

use super::Backend;

/// A node config. [`NodeToml::new`] has `[log]` (errors only, no access log)
/// and the admin API on an ephemeral loopback port, and nothing else. The
/// text (`to_string()`) has the tables in this order, whatever the order of
/// the calls: `[node]`, `[log]`, `[admin]`, listeners, pools, other tables
/// ([`NodeToml::tables`]), routes.
#[derive(Clone, Default)]
pub struct NodeToml {
    node: String,
    admin_listen: Option<String>,
    admin_off: bool,
    admin: String,
    listeners: String,
    pools: String,
    tables: String,
    routes: String,
}

fn push(text: &mut String, more: &str) {
    text.push_str(more);
    if !more.ends_with('\n') {
        text.push('\n');
    }
}

impl NodeToml {
    pub fn new() -> NodeToml {
        NodeToml::default()
    }

    /// Lines in `[node]` (name, data_dir, workers, ...).
    pub fn node(mut self, lines: &str) -> NodeToml {
        push(&mut self.node, lines);
        self
    }

    /// The admin API on `addr` instead of an ephemeral port.
    pub fn admin_listen(mut self, addr: &str) -> NodeToml {
        self.admin_listen = Some(addr.to_string());
        self
    }

    /// No admin API (`[admin] enabled = false`).
    pub fn without_admin(mut self) -> NodeToml {
        self.admin_off = true;
        self
    }

    /// More lines in `[admin]` (e.g. `token_file = "..."`).
    pub fn admin(mut self, lines: &str) -> NodeToml {
        push(&mut self.admin, lines);
        self
    }

    /// A listener `name` on an ephemeral loopback port, with more attribute
    /// lines (`attrs`, may be empty).
    pub fn listener(self, name: &str, attrs: &str) -> NodeToml {
        self.listeners(&listener(name, attrs))
    }

    /// `[[listeners]]` tables written out.
    pub fn listeners(mut self, tables: &str) -> NodeToml {
        push(&mut self.listeners, tables);
        self
    }

    /// A pool; `body` is all of it but the name (servers, balance, checks, ...).
    pub fn pool(mut self, name: &str, body: &str) -> NodeToml {
        push(&mut self.pools, &format!("\n[[pools]]\nname = \"{name}\"\n{body}"));
        self
    }

    /// Any other tables (`[limits]`, `[cluster]`, `[[rate_limits]]`, ...).
    /// They stand after the pools and before the routes of
    /// [`NodeToml::route`], so `[[routes]]` among them are matched first.
    pub fn tables(mut self, text: &str) -> NodeToml {
        push(&mut self.tables, &format!("\n{text}"));
        self
    }

    /// A route by `path_prefix` to `pool`, with more attribute lines
    /// (`websocket = true`, `rate_limit = "..."`; may be empty).
    pub fn route(mut self, name: &str, path_prefix: &str, pool: &str, attrs: &str) -> NodeToml {
        let route =
            format!("\n[[routes]]\nname = \"{name}\"\npath_prefix = \"{path_prefix}\"\npool = \"{pool}\"\n{attrs}");
        push(&mut self.routes, &route);
        self
    }
}

impl fmt::Display for NodeToml {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.node.is_empty() {
            writeln!(f, "[node]\n{}", self.node)?;
        }
        writeln!(f, "[log]\nlevel = \"error\"\naccess_log = false\n")?;
        if self.admin_off {
            writeln!(f, "[admin]\nenabled = false\n")?;
        } else {
            let listen = self.admin_listen.as_deref().unwrap_or("127.0.0.1:0");
            writeln!(f, "[admin]\nlisten = \"{listen}\"\n{}", self.admin)?;
        }
        write!(f, "{}{}{}{}", self.listeners, self.pools, self.tables, self.routes)
    }
}

/// `[[listeners]]` named `name` on an ephemeral loopback port, with more
/// attribute lines (`attrs`, may be empty).
pub fn listener(name: &str, attrs: &str) -> String {
    format!("[[listeners]]\nname = \"{name}\"\nbind = \"127.0.0.1:0\"\n{attrs}\n")
}

/// A config with one listener on an ephemeral port and one pool "p" whose
/// `[[pools]]` body is `pool` (everything but the name), routed at "/";
/// `extra` tables stand between the pool and the route.
pub fn config(pool: &str, extra: &str) -> String {
    config_admin(pool, extra, "")
}

/// [`config`] with extra lines in the `[admin]` table (e.g. `token_file`).
pub fn config_admin(pool: &str, extra: &str, admin: &str) -> String {
    config_listeners(&listener("http", ""), pool, extra, admin)
}

/// [`config_admin`] with the `[[listeners]]` tables written out in full
/// (TLS, PROXY protocol, trusted proxies, redirects), and `[[routes]]`
/// given in `extra` matched before the default route to pool "p".
pub fn config_listeners(listeners: &str, pool: &str, extra: &str, admin: &str) -> String {
    NodeToml::new()
        .admin(admin)
        .listeners(listeners)
        .pool("p", pool)
        .tables(extra)
        .route("default", "/", "p", "")
        .to_string()
}

/// A `[[routes]]` table that answers requests for exactly `path` itself
/// with `status` and `body` (a health endpoint, say).
pub fn respond_route(name: &str, path: &str, status: u16, body: &str) -> String {
    format!("\n[[routes]]\nname = \"{name}\"\npath = \"{path}\"\nrespond = {{ status = {status}, body = {body:?} }}\n")
}

/// `servers = [...]` for these backends, each with the given attributes.
pub fn servers(list: &[(&Backend, &str)]) -> String {
    let items: Vec<String> = list
        .iter()
        .map(|(b, attrs)| {
            let sep = if attrs.is_empty() { "" } else { ", " };
            format!("{{ addr = \"{}\", name = \"{}\"{sep}{attrs} }}", b.addr, b.state.name)
        })
        .collect();
    format!("servers = [{}]", items.join(", "))
}
