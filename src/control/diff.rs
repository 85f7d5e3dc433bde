//! What a reload changes: a pure comparison of the running configuration
//! with a new one, as a list of [`Change`]s, each either applied with the
//! new snapshot or kept until the next restart (a setting read only at
//! start: listeners, the admin listener, connection limits, logging, the
//! runtime, the cluster). [`super::Control::apply`] publishes the new
//! snapshot and turns the restart-only changes into the reload's warnings.

use crate::config::Config;

/// One difference between the running configuration and a new one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A setting that takes effect with the new snapshot, for new
    /// requests (named by its key).
    Setting(&'static str),
    PoolAdded(String),
    PoolRemoved(String),
    /// A pool's settings, servers or checks.
    PoolChanged(String),
    RouteAdded(String),
    RouteRemoved(String),
    RouteChanged(String),
    /// The same routes in another order (the first match wins).
    RoutesReordered,
    RateLimitAdded(String),
    RateLimitRemoved(String),
    RateLimitChanged(String),
    /// A setting read only at start: the running node keeps the old one.
    Restart(&'static str),
}

impl Change {
    pub fn needs_restart(&self) -> bool {
        matches!(self, Change::Restart(_))
    }

    /// What the reload report and the log say about a change that waits
    /// for a restart.
    pub fn warning(&self) -> Option<String> {
        let Change::Restart(key) = self else { return None };
        Some(match *key {
            "listeners" => "listener changes (bind, tls settings, redirect_to_https, redirect_except, \
                            accept_proxy_protocol, trusted_proxies) take effect at the next restart; certificate \
                            files are reloaded now"
                .to_string(),
            "cluster" => "cluster changes (listen, advertise, seeds, secret_file, gossip_interval) take effect at \
                          the next restart"
                .to_string(),
            key => format!("{key} changes take effect at the next restart"),
        })
    }
}

/// Every difference between `old` and `new`, restart-only settings first
/// (in the order the reload report lists them), then the applied ones.
pub fn diff(old: &Config, new: &Config) -> Vec<Change> {
    let mut out = Vec::new();
    let (ol, nl) = (&old.limits, &new.limits);
    let restart_only = [
        // Listeners (bind, tls, redirects, PROXY protocol, trusted proxies)
        // are built at start; certificate files reload in place.
        ("listeners", old.listeners != new.listeners),
        ("admin.listen", old.admin.listen != new.admin.listen),
        ("limits.max_connections", ol.max_connections != nl.max_connections),
        ("limits.max_header_size", ol.max_header_size != nl.max_header_size),
        ("limits.header_timeout", ol.header_timeout != nl.header_timeout),
        ("limits.keepalive_timeout", ol.keepalive_timeout != nl.keepalive_timeout),
        ("limits.send_timeout", ol.send_timeout != nl.send_timeout),
        ("limits.shutdown_timeout", ol.shutdown_timeout != nl.shutdown_timeout),
        ("log.level", old.log.level != new.log.level),
        ("log.format", old.log.format != new.log.format),
        ("node.workers", old.node.workers != new.node.workers),
        ("node.busy_poll", old.node.busy_poll != new.node.busy_poll),
        ("node.busy_poll_coalesce", old.node.busy_poll_coalesce != new.node.busy_poll_coalesce),
        ("node.data_dir", old.node.data_dir != new.node.data_dir),
        // The node's name in its cluster and its session store.
        ("node.name", old.node.name != new.node.name),
        ("cluster", old.cluster != new.cluster),
    ];
    out.extend(restart_only.into_iter().filter(|(_, changed)| *changed).map(|(key, _)| Change::Restart(key)));
    let applied = [
        ("limits.max_body", ol.max_body != nl.max_body),
        ("limits.body_timeout", ol.body_timeout != nl.body_timeout),
        ("limits.tunnel_close_spread", ol.tunnel_close_spread != nl.tunnel_close_spread),
        ("limits.shed_over", ol.shed_over != nl.shed_over),
        ("limits.upgrade_drain_timeout", ol.upgrade_drain_timeout != nl.upgrade_drain_timeout),
        ("log.access_log", old.log.access_log != new.log.access_log),
        ("headers", old.headers != new.headers),
        ("metrics.enabled", old.metrics_enabled != new.metrics_enabled),
        ("admin.token_file", old.admin.token_file != new.admin.token_file || old.admin.token != new.admin.token),
        ("admin.stats", old.admin.stats != new.admin.stats),
    ];
    out.extend(applied.into_iter().filter(|(_, changed)| *changed).map(|(key, _)| Change::Setting(key)));
    by_name(
        &old.pools,
        &new.pools,
        |p| &p.name,
        &mut out,
        [Change::PoolAdded, Change::PoolRemoved, Change::PoolChanged],
    );
    by_name(
        &old.routes,
        &new.routes,
        |r| &r.name,
        &mut out,
        [Change::RouteAdded, Change::RouteRemoved, Change::RouteChanged],
    );
    let order = |routes: &[crate::config::RouteConfig], others: &[crate::config::RouteConfig]| -> Vec<String> {
        routes.iter().filter(|r| others.iter().any(|o| o.name == r.name)).map(|r| r.name.clone()).collect()
    };
    if order(&old.routes, &new.routes) != order(&new.routes, &old.routes) {
        out.push(Change::RoutesReordered);
    }
    by_name(
        &old.rate_limits,
        &new.rate_limits,
        |z| &z.name,
        &mut out,
        [Change::RateLimitAdded, Change::RateLimitRemoved, Change::RateLimitChanged],
    );
    out
}

/// Items matched by name: added, removed, changed (in `new`'s order, then
/// the removed ones in `old`'s).
fn by_name<T: PartialEq>(
    old: &[T],
    new: &[T],
    name: impl Fn(&T) -> &String,
    out: &mut Vec<Change>,
    [added, removed, changed]: [fn(String) -> Change; 3],
) {
    for n in new {
        match old.iter().find(|o| name(o) == name(n)) {
            None => out.push(added(name(n).clone())),
            Some(o) if o != n => out.push(changed(name(n).clone())),
            Some(_) => {}
        }
    }
    for o in old.iter().filter(|o| !new.iter().any(|n| name(n) == name(o))) {
        out.push(removed(name(o).clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Cidr, RouteAction};
    use std::time::Duration;

    /// One change made to a copy of the base config.
    type Edit = fn(&mut Config);

    fn base() -> Config {
        crate::config::sample::config()
    }

    fn changed(edit: impl FnOnce(&mut Config)) -> Vec<Change> {
        let old = base();
        let mut new = old.clone();
        edit(&mut new);
        diff(&old, &new)
    }

    #[test]
    fn the_same_config_changes_nothing() {
        assert_eq!(diff(&base(), &base()), vec![]);
    }

    #[test]
    fn listener_changes_need_a_restart_and_say_so() {
        for edit in [
            (|c: &mut Config| c.listeners[0].bind = "127.0.0.1:8443".parse().unwrap()) as Edit,
            |c| c.listeners[0].redirect_to_https = Some(443),
            |c| c.listeners[0].redirect_except.push("/health".into()),
            |c| c.listeners[0].accept_proxy_protocol = true,
            |c| c.listeners[0].trusted_proxies.push(Cidr::parse("10.0.0.0/8").unwrap()),
            |c| c.listeners[0].name = "plain".into(),
            |c| {
                let mut second = c.listeners[0].clone();
                second.name = "second".into();
                c.listeners.push(second)
            },
        ] {
            let changes = changed(edit);
            assert_eq!(changes, vec![Change::Restart("listeners")]);
            let warning = changes[0].warning().expect("a restart-only change warns");
            assert!(warning.contains("take effect at the next restart"), "{warning}");
            assert!(warning.contains("certificate files are reloaded now"), "{warning}");
        }
    }

    #[test]
    fn start_only_settings_need_a_restart() {
        let cases: [(&str, Edit); 15] = [
            ("admin.listen", |c| c.admin.listen = Some("127.0.0.1:19191".parse().unwrap())),
            ("limits.max_connections", |c| c.limits.max_connections += 1),
            ("limits.max_header_size", |c| c.limits.max_header_size += 1),
            ("limits.header_timeout", |c| c.limits.header_timeout += Duration::from_secs(1)),
            ("limits.keepalive_timeout", |c| c.limits.keepalive_timeout += Duration::from_secs(1)),
            ("limits.send_timeout", |c| c.limits.send_timeout += Duration::from_secs(1)),
            ("limits.shutdown_timeout", |c| c.limits.shutdown_timeout += Duration::from_secs(1)),
            ("log.level", |c| c.log.level = "debug".into()),
            ("log.format", |c| c.log.format = crate::config::LogFormat::Json),
            ("node.workers", |c| c.node.workers += 1),
            ("node.busy_poll", |c| c.node.busy_poll += Duration::from_millis(1)),
            ("node.busy_poll_coalesce", |c| c.node.busy_poll_coalesce += Duration::from_micros(1)),
            ("node.data_dir", |c| c.node.data_dir.push("elsewhere")),
            ("node.name", |c| c.node.name.push_str("-2")),
            ("cluster", |c| {
                c.cluster = Some(crate::config::ClusterSettings {
                    listen: "127.0.0.1:7946".parse().unwrap(),
                    advertise: None,
                    seeds: vec![],
                    secret_file: "secret".into(),
                    secret: crate::cluster::ClusterSecret::from_bytes(b"0123456789abcdef0123456789abcdef").unwrap(),
                    gossip_interval: Duration::from_secs(1),
                })
            }),
        ];
        for (key, edit) in cases {
            let changes = changed(edit);
            assert_eq!(changes, vec![Change::Restart(key)], "{key}");
            assert!(changes[0].needs_restart());
            let warning = changes[0].warning().unwrap();
            assert!(warning.starts_with(key) && warning.contains("next restart"), "{warning}");
        }
    }

    #[test]
    fn settings_read_per_request_apply_at_once() {
        let cases: [(&str, Edit); 10] = [
            ("limits.max_body", |c| c.limits.max_body += 1),
            ("limits.shed_over", |c| c.limits.shed_over += Duration::from_secs(1)),
            ("limits.upgrade_drain_timeout", |c| c.limits.upgrade_drain_timeout += Duration::from_secs(1)),
            ("limits.body_timeout", |c| c.limits.body_timeout += Duration::from_secs(1)),
            ("limits.tunnel_close_spread", |c| c.limits.tunnel_close_spread += Duration::from_millis(1)),
            ("log.access_log", |c| c.log.access_log = !c.log.access_log),
            ("headers", |c| c.headers.hsts = Some("max-age=60".into())),
            ("metrics.enabled", |c| c.metrics_enabled = !c.metrics_enabled),
            ("admin.token_file", |c| c.admin.token = Some("new token".into())),
            ("admin.stats", |c| c.admin.stats = !c.admin.stats),
        ];
        for (key, edit) in cases {
            let changes = changed(edit);
            assert_eq!(changes, vec![Change::Setting(key)], "{key}");
            assert!(!changes[0].needs_restart() && changes[0].warning().is_none());
        }
    }

    #[test]
    fn pools_are_compared_by_name() {
        assert_eq!(changed(|c| c.pools[0].retries += 1), vec![Change::PoolChanged("api".into())]);
        assert_eq!(changed(|c| c.pools[0].servers[1].weight = 5), vec![Change::PoolChanged("api".into())]);
        assert_eq!(
            changed(|c| {
                c.pools[1].servers.pop();
            }),
            vec![Change::PoolChanged("other".into())]
        );
        assert_eq!(
            changed(|c| c.pools[1].name = "third".into()),
            vec![Change::PoolAdded("third".into()), Change::PoolRemoved("other".into())]
        );
        // The same pools in another order: nothing to do.
        assert_eq!(changed(|c| c.pools.swap(0, 1)), vec![]);
    }

    #[test]
    fn routes_are_compared_by_name_and_order() {
        assert_eq!(
            changed(|c| c.routes[0].tunnel_timeout += Duration::from_secs(1)),
            vec![Change::RouteChanged("health".into())]
        );
        assert_eq!(
            changed(|c| c.routes[0].action = RouteAction::Redirect { to: "/".into(), status: 302 }),
            vec![Change::RouteChanged("health".into())]
        );
        assert_eq!(
            changed(|c| {
                c.routes.remove(0);
            }),
            vec![Change::RouteRemoved("health".into())]
        );
        assert_eq!(changed(|c| c.routes.swap(0, 1)), vec![Change::RoutesReordered]);
        assert_eq!(
            changed(|c| {
                let mut r = c.routes[0].clone();
                r.name = "ready".into();
                c.routes.insert(0, r);
            }),
            vec![Change::RouteAdded("ready".into())]
        );
    }

    #[test]
    fn rate_limits_are_compared_by_name() {
        let mut zone = base().rate_limits[0].clone();
        zone.name = "api".into();
        assert_eq!(changed(|c| c.rate_limits[0].max_keys += 1), vec![Change::RateLimitChanged("login".into())]);
        assert_eq!(changed(move |c| c.rate_limits.push(zone)), vec![Change::RateLimitAdded("api".into())]);
        assert_eq!(changed(|c| c.rate_limits.clear()), vec![Change::RateLimitRemoved("login".into())]);
    }

    #[test]
    fn several_changes_are_all_listed_restart_first() {
        let changes = changed(|c| {
            c.pools[0].retries += 1;
            c.limits.max_body += 1;
            c.limits.max_connections += 1;
        });
        assert_eq!(
            changes,
            vec![
                Change::Restart("limits.max_connections"),
                Change::Setting("limits.max_body"),
                Change::PoolChanged("api".into())
            ]
        );
    }
}
