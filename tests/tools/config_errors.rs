//! One test per kind of config error, asserting the exact message: file,
//! line, column, key, and what was expected.

use std::path::Path;

use sysmanage_node::config::{default_config, parse_str};

const BASE: &str = r#"[[listeners]]
name = "http"
bind = "127.0.0.1:8000"

[[pools]]
name = "api"
servers = [{ addr = "127.0.0.1:8080" }]

[[routes]]
name = "default"
path_prefix = "/"
pool = "api"
"#;

/// All error lines for `text`, as `check-config` prints them.
fn errors(text: &str) -> Vec<String> {
    match parse_str(text, "node.toml", Path::new(".")) {
        Ok(_) => panic!("config was accepted:\n{text}"),
        Err(e) => e.0.iter().map(|x| x.to_string()).collect(),
    }
}

fn one_error(text: &str) -> String {
    let all = errors(text);
    assert_eq!(all.len(), 1, "expected one error, got {all:#?}");
    all.into_iter().next().unwrap()
}

#[test]
fn the_base_config_and_the_embedded_default_are_valid() {
    parse_str(BASE, "node.toml", Path::new(".")).unwrap();
    let d = default_config().unwrap();
    assert_eq!(d.listeners[0].bind.to_string(), "127.0.0.1:8000");
}

#[test]
fn zero_client_timeouts_are_refused() {
    assert_eq!(
        one_error(&format!("[limits]\nsend_timeout = \"0s\"\n{BASE}")),
        "node.toml:2:16: limits.send_timeout: must be above zero (every response that fills the socket would be cut off)"
    );
    assert_eq!(
        one_error(&format!("[limits]\nheader_timeout = \"0s\"\n{BASE}")),
        "node.toml:2:18: limits.header_timeout: must be above zero (slow clients would never be cut off)"
    );
}

#[test]
fn example_config_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/node.toml");
    if let Err(e) = sysmanage_node::config::load_file(&path) {
        panic!("examples/node.toml is invalid:\n{e}");
    }
}

#[test]
fn weight_out_of_range() {
    let text = BASE.replace(
        r#"servers = [{ addr = "127.0.0.1:8080" }]"#,
        "servers = [\n  { addr = \"127.0.0.1:8080\" },\n  { addr = \"127.0.0.1:8081\" },\n  { addr = \"127.0.0.1:8082\", weight = 0 },\n]",
    );
    assert_eq!(one_error(&text), "node.toml:10:39: pools[0].servers[2].weight: must be 1..=256, got 0");
}

#[test]
fn unknown_key() {
    let text = BASE.replace("name = \"api\"", "name = \"api\"\nbalanse = \"least_conn\"");
    let e = one_error(&text);
    assert!(e.starts_with("node.toml:7:1: pools[0].balanse: unknown field `balanse`, expected one of"), "{e}");
}

#[test]
fn wrong_type() {
    let text = BASE.replace("name = \"api\"", "name = \"api\"\nretries = \"three\"");
    assert_eq!(one_error(&text), "node.toml:7:11: pools[0].retries: invalid type: string \"three\", expected i64");
}

#[test]
fn toml_syntax_error() {
    let e = one_error("[[listeners]\nname = 1\n");
    assert!(e.starts_with("node.toml:1:"), "{e}");
    assert!(e.contains("invalid"), "{e}");
}

#[test]
fn unknown_balance_algorithm() {
    let text = BASE.replace("name = \"api\"", "name = \"api\"\nbalance = \"fastest\"");
    assert_eq!(
        one_error(&text),
        "node.toml:7:11: pools[0].balance: expected one of round_robin, least_conn, source_hash, random_two, primary, got \"fastest\""
    );
}

#[test]
fn route_names_a_missing_pool() {
    let text = BASE.replace("pool = \"api\"", "pool = \"apii\"");
    assert_eq!(one_error(&text), "node.toml:12:8: routes[0].pool: no pool named \"apii\" (pools: api)");
}

#[test]
fn route_names_a_missing_rate_limit() {
    let text = format!("{BASE}rate_limit = \"auth\"\n");
    assert_eq!(
        one_error(&text),
        "node.toml:13:14: routes[0].rate_limit: no rate limit named \"auth\" (rate_limits: none defined)"
    );
}

#[test]
fn duplicate_names() {
    let text = format!("{BASE}\n[[routes]]\nname = \"default\"\npath = \"/x\"\npool = \"api\"\n");
    assert_eq!(
        one_error(&text),
        "node.toml:15:8: routes[1].name: route name \"default\" is used twice; names must be unique"
    );
}

#[test]
fn bad_duration() {
    let text = format!("[limits]\nheader_timeout = \"10 seconds\"\n{BASE}");
    assert_eq!(
        one_error(&text),
        "node.toml:2:18: limits.header_timeout: expected a duration such as \"500ms\", \"5s\", \"1m\" or \"1h30m\": unknown unit \" seconds\" in \"10 seconds\""
    );
}

#[test]
fn bad_size() {
    let text = format!("[limits]\nmax_body = \"32 parsecs\"\n{BASE}");
    assert_eq!(
        one_error(&text),
        "node.toml:2:12: limits.max_body: expected a size such as \"32MiB\", \"512KiB\", \"10MB\" or a number of bytes: unknown unit \"parsecs\" in \"32 parsecs\""
    );
}

#[test]
fn bad_addresses() {
    let text = BASE.replace("127.0.0.1:8000", "0.0.0.0").replace("127.0.0.1:8080", "localhost");
    assert_eq!(
        errors(&text),
        vec![
            "node.toml:3:8: listeners[0].bind: expected an IP address and port such as \"0.0.0.0:80\", got \"0.0.0.0\"",
            "node.toml:7:21: pools[0].servers[0].addr: expected host:port such as \"127.0.0.1:8080\", got \"localhost\"",
        ]
    );
}

#[test]
fn route_without_path_or_action() {
    let text = BASE.replace("path_prefix = \"/\"\npool = \"api\"\n", "");
    assert_eq!(
        errors(&text),
        vec![
            "node.toml:9:1: routes[0]: missing: set path (exact match) or path_prefix",
            "node.toml:9:1: routes[0]: missing action: set pool, respond, static_dir or redirect",
        ]
    );
}

#[test]
fn route_with_two_actions() {
    let text = format!("{BASE}respond = {{ status = 200 }}\n");
    assert_eq!(
        one_error(&text),
        "node.toml:9:1: routes[0]: set exactly one action: pool, respond, static_dir or redirect (several are set)"
    );
}

#[test]
fn bad_retry_condition_and_method() {
    let text = BASE.replace("name = \"api\"", "name = \"api\"\nretry_on = [\"error\", \"http_418\"]")
        + "methods = [\"GET\", \"G E T\"]\n";
    let all = errors(&text);
    assert_eq!(all.len(), 2, "{all:#?}");
    assert!(all[0].starts_with("node.toml:7:22: pools[0].retry_on[1]: expected one of error, timeout"), "{}", all[0]);
    assert_eq!(all[1], "node.toml:14:19: routes[0].methods[1]: expected an HTTP method such as \"GET\", got \"G E T\"");
}

#[test]
fn missing_static_dir() {
    let text = BASE.replace("pool = \"api\"\n", "static_dir = \"/nonexistent/dir\"\n");
    assert_eq!(one_error(&text), "node.toml:12:14: routes[0].static_dir: /nonexistent/dir is not a readable directory");
}

#[test]
fn no_listeners_no_routes_no_servers() {
    let all = errors("[[pools]]\nname = \"api\"\nservers = []\n");
    assert_eq!(
        all,
        vec![
            "node.toml:3:11: pools[0].servers: a pool needs at least one server",
            "node.toml: listeners: at least one [[listeners]] entry is needed",
            "node.toml: routes: at least one [[routes]] entry is needed (every request would get 404)",
        ]
    );
}

#[test]
fn every_error_is_reported_at_once() {
    let text = format!(
        "[limits]\nmax_body = \"x\"\nheader_timeout = \"y\"\n{}",
        BASE.replace("pool = \"api\"", "pool = \"nope\"")
    );
    assert_eq!(errors(&text).len(), 3);
}

#[test]
fn cluster_table_errors() {
    let dir = tempfile::tempdir().unwrap();
    let short = dir.path().join("short.key");
    std::fs::write(&short, "abc").unwrap();
    let text = format!(
        "{BASE}\n[cluster]\nlisten = \"0.0.0.0:7946\"\nseeds = [\"peer-without-port\"]\nsecret_file = \"{}\"\ngossip_interval = \"5ms\"\n",
        short.display()
    );
    let all = errors(&text).join("\n");
    assert!(all.contains("cluster.advertise: listen = \"0.0.0.0:7946\" is a wildcard address"), "{all}");
    assert!(all.contains("cluster.seeds[0]: expected host:port of a peer's cluster listener"), "{all}");
    assert!(all.contains("cluster.secret_file: cluster secret in"), "{all}");
    assert!(all.contains("is too short"), "{all}");
    assert!(all.contains("cluster.gossip_interval: must be 10ms..=60s"), "{all}");

    let text = format!("{BASE}\n[cluster]\nlisten = \"127.0.0.1:7946\"\n");
    assert!(one_error(&text).ends_with("cluster.secret_file: is required: every node of a cluster reads the same secret (`sysmanage-node init` writes one)"));
}

#[test]
fn cluster_wide_zones_need_a_window_and_a_cluster() {
    let zone = |body: &str| format!("[[rate_limits]]\nname = \"z\"\n{body}\ncluster = true\n{BASE}");
    let e = one_error(&zone("rate = \"5/s\"\nburst = 10"));
    assert!(e.ends_with("rate_limits[0].cluster: applies only to window zones (requests + window): a token bucket cannot be summed across nodes"), "{e}");
    let e = one_error(&zone("requests = 20\nwindow = \"10s\""));
    assert!(
        e.ends_with("rate_limits[0].cluster: needs a [cluster] table: a standalone node has no peers to sum with"),
        "{e}"
    );
}

#[test]
fn failback_is_for_primary_pools_only() {
    let text = BASE.replace("name = \"api\"\n", "name = \"api\"\nfailback = true\n");
    assert!(one_error(&text).ends_with("pools[0].failback: applies only to balance = \"primary\""));
}

#[test]
fn a_hash_affinity_policy_cannot_apply_to_a_primary_pool() {
    let text = BASE.replace(
        "name = \"api\"\n",
        "name = \"api\"\nbalance = \"primary\"\naffinity = { key = \"cookie:s\", policy = \"hash\" }\n",
    );
    assert!(
        one_error(&text).ends_with(
            "pools[0].affinity.policy: \"hash\" cannot apply with balance = \"primary\": new keys always go to the \
             pool's active server; remove policy (or set \"least_loaded\")"
        ),
        "{}",
        one_error(&text)
    );
    let ok = BASE.replace(
        "name = \"api\"\n",
        "name = \"api\"\nbalance = \"primary\"\naffinity = { key = \"cookie:s\", policy = \"least_loaded\" }\n",
    );
    assert!(parse_str(&ok, "node.toml", Path::new(".")).is_ok());
}

#[test]
fn primary_pools_over_the_same_servers_must_agree_on_failback() {
    let two = |failback: &str| {
        format!(
            "{BASE}\n[[pools]]\nname = \"agents\"\nbalance = \"primary\"\n{failback}\
             servers = [{{ addr = \"127.0.0.1:8080\" }}]\n"
        )
        .replace("name = \"api\"\n", "name = \"api\"\nbalance = \"primary\"\n")
    };
    assert!(
        one_error(&two("failback = true\n")).ends_with(
            "pools[1].failback: pool \"agents\" has the same servers as pool \"api\", and the two share one active \
             server: set failback the same in both"
        ),
        "{}",
        one_error(&two("failback = true\n"))
    );
    assert!(parse_str(&two(""), "node.toml", Path::new(".")).is_ok());
}

#[test]
fn busy_poll_out_of_range_or_not_a_duration() {
    let text = format!("[node]\nbusy_poll = \"200ms\"\n{BASE}");
    assert_eq!(one_error(&text), "node.toml:2:13: node.busy_poll: must be 0s..=100ms (0s: off), got 200ms");
    let text = format!("[node]\nbusy_poll = \"fast\"\n{BASE}");
    assert!(one_error(&text).starts_with("node.toml:2:13: node.busy_poll: expected a duration such as"));
    let ok = parse_str(&format!("[node]\nbusy_poll = \"1ms\"\n{BASE}"), "node.toml", Path::new(".")).unwrap();
    assert_eq!(ok.node.busy_poll, std::time::Duration::from_millis(1));
    let off = parse_str(BASE, "node.toml", Path::new(".")).unwrap();
    assert!(off.node.busy_poll.is_zero(), "busy polling must be off by default");
}

#[test]
fn busy_poll_coalesce_out_of_range_or_without_busy_polling() {
    let text = format!("[node]\nbusy_poll = \"1ms\"\nbusy_poll_coalesce = \"2ms\"\n{BASE}");
    assert_eq!(one_error(&text), "node.toml:3:22: node.busy_poll_coalesce: must be 0s..=1ms (0s: off), got 2ms");
    let text = format!("[node]\nbusy_poll_coalesce = \"10us\"\n{BASE}");
    assert_eq!(
        one_error(&text),
        "node.toml:2:22: node.busy_poll_coalesce: needs node.busy_poll: batching happens inside the busy-poll loop, \
         which is off"
    );
    let text = format!("[node]\nbusy_poll = \"1ms\"\nbusy_poll_coalesce = \"10\"\n{BASE}");
    assert!(one_error(&text).ends_with("\"10\" has no unit"), "{}", one_error(&text));
    let ok = parse_str(
        &format!("[node]\nbusy_poll = \"1ms\"\nbusy_poll_coalesce = \"10us\"\n{BASE}"),
        "node.toml",
        Path::new("."),
    )
    .unwrap();
    assert_eq!(ok.node.busy_poll_coalesce, std::time::Duration::from_micros(10));
    let off = parse_str(BASE, "node.toml", Path::new(".")).unwrap();
    assert!(off.node.busy_poll_coalesce.is_zero(), "coalescing must be off by default");
}
