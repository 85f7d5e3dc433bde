//! What `packaging/` ships: the packaged config, the systemd unit, the
//! package metadata and maintainer scripts, the Kubernetes manifests and
//! the Grafana dashboard. They parse, they say what the issue asks, and
//! every metric name they use is one a running node exports.
//!
//! Building and installing the packages is `.ci/run`'s job (it needs root,
//! dpkg and minutes of release build); this file checks what can be checked
//! in a plain `cargo test`.

use crate::support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Every `sysmanage_...` name in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("sysmanage_") {
        let tail = &rest[i..];
        let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
        out.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

#[test]
fn packaged_config_is_valid() {
    let text = read("packaging/node.toml");
    let cfg = sysmanage_node::config::parse_str(&text, "packaging/node.toml", Path::new("/etc/sysmanage-node"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.node.data_dir, Path::new("/var/lib/sysmanage-node"));
    assert!(cfg.admin.token.is_none(), "no token file: it would not exist on a fresh install");
}

#[test]
fn systemd_unit_has_the_hardening_and_timeouts() {
    let unit = read("packaging/sysmanage-node.service");
    let directive = |key: &str| -> Vec<String> {
        unit.lines().filter_map(|l| l.trim().strip_prefix(&format!("{key}=")).map(|v| v.trim().to_string())).collect()
    };
    for (key, value) in [
        ("User", "sysmanage-node"),
        ("AmbientCapabilities", "CAP_NET_BIND_SERVICE"),
        ("NoNewPrivileges", "true"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "true"),
        ("PrivateTmp", "true"),
        ("ReadWritePaths", "/var/lib/sysmanage-node"),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
        ("Restart", "on-failure"),
        ("ExecStart", "/usr/bin/sysmanage-node run -c /etc/sysmanage-node/node.toml"),
    ] {
        assert_eq!(directive(key), vec![value.to_string()], "{key}=");
    }
    let nofile: u64 = directive("LimitNOFILE")[0].parse().unwrap();
    assert!(nofile >= 65_536, "LimitNOFILE={nofile}: too low for tens of thousands of connections");
    // The stop timeout covers the drain deadline of the packaged config.
    let stop = humantime::parse_duration(&directive("TimeoutStopSec")[0]).unwrap();
    let cfg = sysmanage_node::config::parse_str(&read("packaging/node.toml"), "node.toml", Path::new("/")).unwrap();
    assert!(
        stop >= cfg.limits.shutdown_timeout + Duration::from_secs(10),
        "TimeoutStopSec {stop:?} leaves no margin over shutdown_timeout {:?}",
        cfg.limits.shutdown_timeout
    );
}

#[test]
fn package_metadata_lists_every_file() {
    let manifest: toml::Value = toml::from_str(&read("Cargo.toml")).unwrap();
    let meta = &manifest["package"]["metadata"];
    let deb_assets: Vec<(String, String)> = meta["deb"]["assets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a[0].as_str().unwrap().to_string(), a[1].as_str().unwrap().to_string()))
        .collect();
    let rpm_assets = meta["generate-rpm"]["assets"].as_array().unwrap();
    for wanted in [
        "target/release/sysmanage-node",
        "packaging/node.toml",
        "packaging/sysmanage-node.service",
        "target/man/sysmanage-node.1.gz",
        "target/man/sysmanage-node.toml.5.gz",
    ] {
        assert!(deb_assets.iter().any(|(src, _)| src == wanted), "deb asset {wanted}");
        assert!(rpm_assets.iter().any(|a| a["source"].as_str() == Some(wanted)), "rpm asset {wanted}");
        if !wanted.starts_with("target/") {
            assert!(root().join(wanted).is_file(), "{wanted} exists");
        }
    }
    // build.sh makes the gzipped pages from these.
    for page in ["man/sysmanage-node.1", "man/sysmanage-node.toml.5"] {
        assert!(root().join(page).is_file());
        assert!(read("packaging/build.sh").contains(page), "build.sh gzips {page}");
    }
    let conf = meta["deb"]["conf-files"].as_array().unwrap();
    assert!(conf.iter().any(|c| c.as_str() == Some("/etc/sysmanage-node/node.toml")));
    let rpm_conf = rpm_assets.iter().find(|a| a["source"].as_str() == Some("packaging/node.toml")).unwrap();
    assert_eq!(rpm_conf["config"].as_str(), Some("noreplace"));
    assert_eq!(rpm_conf["dest"].as_str(), Some("/etc/sysmanage-node/node.toml"));

    // Maintainer scripts exist and are valid shell.
    let deb_dir = meta["deb"]["maintainer-scripts"].as_str().unwrap();
    let mut scripts: Vec<PathBuf> =
        ["postinst", "prerm", "postrm"].iter().map(|s| root().join(deb_dir).join(s)).collect();
    for key in ["pre_install_script", "post_install_script", "pre_uninstall_script", "post_uninstall_script"] {
        scripts.push(root().join(meta["generate-rpm"][key].as_str().unwrap()));
    }
    for s in &scripts {
        let text = std::fs::read_to_string(s).unwrap_or_else(|e| panic!("{}: {e}", s.display()));
        let ok = std::process::Command::new("sh").arg("-n").arg(s).status().unwrap();
        assert!(ok.success(), "{} is not valid sh", s.display());
        assert!(!text.contains("\r\n"), "{}: CRLF", s.display());
    }
    let postinst = read(&format!("{deb_dir}/postinst"));
    assert!(postinst.contains("adduser --system") && postinst.contains("/var/lib/sysmanage-node"));
    assert!(read(&format!("{deb_dir}/postrm")).contains("purge)"));
    assert!(read("packaging/rpm/pre.sh").contains("useradd -r"));
}

/// The documents of a multi-document YAML file.
fn yaml_documents(rel: &str) -> Vec<serde_yaml::Value> {
    use serde::Deserialize;
    let text = read(rel);
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde_yaml::Value::deserialize(d).unwrap_or_else(|e| panic!("{rel}: {e}")))
        .filter(|v| !v.is_null())
        .collect()
}

fn k8s_files() -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(root().join("packaging/k8s"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") || n.ends_with(".yml"))
        .map(|n| format!("packaging/k8s/{n}"))
        .collect();
    files.sort();
    files
}

#[test]
fn kubernetes_manifests_parse_and_scale_on_cpu_memory_and_connections() {
    let docs: Vec<serde_yaml::Value> = k8s_files().iter().flat_map(|f| yaml_documents(f)).collect();
    let kind = |k: &str| docs.iter().find(|d| d["kind"].as_str() == Some(k)).unwrap_or_else(|| panic!("no {k}"));
    let deployment = kind("Deployment");
    kind("Service");
    let hpa = kind("HorizontalPodAutoscaler");
    assert_eq!(hpa["apiVersion"].as_str(), Some("autoscaling/v2"));
    let metrics = hpa["spec"]["metrics"].as_sequence().unwrap();
    let resource = |name: &str| metrics.iter().any(|m| m["resource"]["name"].as_str() == Some(name));
    assert!(resource("cpu") && resource("memory"), "HPA on CPU and memory");
    assert!(
        metrics.iter().any(|m| m["type"].as_str() == Some("Pods")
            && m["pods"]["metric"]["name"].as_str() == Some(sysmanage_node::metrics::ACTIVE_CONNECTIONS)),
        "HPA on active connections as a Pods metric"
    );
    assert_eq!(hpa["spec"]["scaleTargetRef"]["name"], deployment["metadata"]["name"]);

    // The config in the ConfigMap is valid (the server's Service name does
    // not resolve here: it is swapped for loopback).
    let config =
        kind("ConfigMap")["data"]["node.toml"].as_str().unwrap().replace("sysmanage-server:8080", "127.0.0.1:8080");
    let cfg = sysmanage_node::config::parse_str(&config, "configmap node.toml", Path::new("/etc/sysmanage-node"))
        .unwrap_or_else(|e| panic!("{e}"));
    // The pod's ports are the config's.
    let ports = &deployment["spec"]["template"]["spec"]["containers"][0]["ports"];
    let port = |name: &str| {
        ports.as_sequence().unwrap().iter().find(|p| p["name"].as_str() == Some(name)).unwrap()["containerPort"]
            .as_u64()
            .unwrap() as u16
    };
    assert_eq!(port("http"), cfg.listeners[0].bind.port());
    assert_eq!(Some(port("admin")), cfg.admin.listen.map(|a| a.port()));
    let grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"].as_u64().unwrap();
    assert!(Duration::from_secs(grace) > cfg.limits.shutdown_timeout, "grace period covers the drain");
}

#[test]
fn grafana_dashboard_parses_and_has_the_panels() {
    let dash: serde_json::Value = serde_json::from_str(&read("packaging/grafana/dashboard.json")).unwrap();
    let titles: Vec<String> =
        dash["panels"].as_array().unwrap().iter().map(|p| p["title"].as_str().unwrap().to_lowercase()).collect();
    for wanted in [
        "request rate per server",
        "p95",
        "active connections per node",
        "health-check success rate",
        "coefficient of variation",
        "tls handshake p90",
    ] {
        assert!(titles.iter().any(|t| t.contains(wanted)), "no panel for {wanted}: {titles:?}");
    }
    for p in dash["panels"].as_array().unwrap() {
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{} has a query", p["title"]);
        for t in targets {
            assert!(t["expr"].as_str().is_some_and(|e| e.contains("sysmanage_")), "{}", p["title"]);
        }
    }
}

/// Metric families of a live node's `/metrics`, with the `_bucket`,
/// `_sum` and `_count` series of histograms.
async fn exported_names() -> BTreeSet<String> {
    let backend = support::Backend::start("app1").await;
    let pool = format!(
        "{}\naffinity = {{ key = \"query:token\", extract = \"sysmanage-token:hostname\" }}",
        support::servers(&[(&backend, "")])
    );
    let dir = tempfile::tempdir().unwrap();
    let extra = format!("[node]\ndata_dir = \"{}\"", dir.path().display());
    let node = support::start_node(&support::config(&pool, &extra)).await;
    let admin = node.admin.unwrap();
    let (status, _, body) = support::get(&support::client(), admin, "/metrics").await;
    assert_eq!(status, 200);
    node.stop().await;
    let mut names = BTreeSet::new();
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (name, kind) = (parts.next().unwrap().to_string(), parts.next().unwrap_or(""));
            if kind == "histogram" {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
            }
            names.insert(name);
        }
    }
    names
}

#[tokio::test]
async fn every_metric_in_kubernetes_and_grafana_is_exported() {
    let exported = exported_names().await;
    // The node exports what src/metrics.rs names (the shared constants).
    let constants = metric_names(&read("src/metrics.rs"));
    for c in &constants {
        assert!(exported.contains(c), "{c} is a constant in src/metrics.rs but not in /metrics");
    }
    let mut used = BTreeSet::new();
    let mut files = k8s_files();
    files.push("packaging/grafana/dashboard.json".to_string());
    for f in &files {
        for name in metric_names(&read(f)) {
            used.insert((name, f.clone()));
        }
    }
    assert!(used.iter().any(|(n, _)| n == "sysmanage_active_connections"));
    let unknown: Vec<_> = used.iter().filter(|(n, _)| !exported.contains(n)).collect();
    assert!(unknown.is_empty(), "metric names the node does not export: {unknown:?}");
}
