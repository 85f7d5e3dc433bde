//! `sysmanage-node init`: the files it writes, their modes, that the config
//! passes `check-config` and starts a node, and that nothing is overwritten
//! without `--force`.

use crate::support;

use std::path::Path;

use support::process::output as run;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).permissions().mode() & 0o777
}

#[test]
fn init_writes_a_config_that_passes_check_config() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("etc");
    let out = run(&["init", "--dir", dir.to_str().unwrap()]);
    assert!(out.status.success(), "init failed: {}", text(&out.stderr));
    let stdout = text(&out.stdout);

    for f in ["node.toml", "admin.token", "cluster.key", "tls/server.crt", "tls/server.key"] {
        assert!(dir.join(f).is_file(), "{f} not written");
    }
    assert!(dir.join("data").is_dir(), "data_dir DIR/data not created");
    for secret in ["admin.token", "cluster.key", "tls/server.key"] {
        assert_eq!(mode(&dir.join(secret)), 0o600, "{secret}");
    }
    let key = std::fs::read_to_string(dir.join("cluster.key")).unwrap();
    let key = key.trim_end();
    assert_eq!(key.len(), 64, "cluster.key: {key:?}");
    assert!(key.chars().all(|c| c.is_ascii_hexdigit()));
    let token = std::fs::read_to_string(dir.join("admin.token")).unwrap();
    assert_ne!(token.trim(), key, "token and secret are independent");
    assert!(!stdout.contains(key) && !stdout.contains(token.trim()), "secrets are never printed");

    // The config points at the files it came with, and at DIR/data.
    let config = std::fs::read_to_string(dir.join("node.toml")).unwrap();
    let quoted = |p: &Path| format!("\"{}\"", p.display());
    assert!(config.contains(&format!("token_file = {}", quoted(&dir.join("admin.token")))), "{config}");
    assert!(config.contains(&format!("cert = {}", quoted(&dir.join("tls/server.crt")))));
    assert!(config.contains(&format!("key = {}", quoted(&dir.join("tls/server.key")))));
    assert!(config.contains(&format!("data_dir = {}", quoted(&dir.join("data")))));
    assert!(config.lines().any(|l| l.trim_start().starts_with("[cluster]")), "a [cluster] table, ready for join");
    assert!(config.contains(&format!("secret_file = {}", quoted(&dir.join("cluster.key")))), "{config}");

    let check = run(&["check-config", dir.join("node.toml").to_str().unwrap()]);
    assert!(check.status.success(), "check-config failed:\n{}\n{}", text(&check.stdout), text(&check.stderr));
    assert!(text(&check.stdout).contains(": OK"), "{}", text(&check.stdout));

    // Next steps name the files and mention join for the cluster secret.
    assert!(stdout.contains("Next steps"), "{stdout}");
    assert!(stdout.contains(&format!("check-config {}", dir.join("node.toml").display())), "{stdout}");
    assert!(stdout.contains("join"), "{stdout}");
}

#[test]
fn init_refuses_to_overwrite_without_force() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let first = run(&["init", "--dir", dir.to_str().unwrap()]);
    assert!(first.status.success(), "{}", text(&first.stderr));
    let before: Vec<Vec<u8>> = ["node.toml", "admin.token", "cluster.key", "tls/server.key"]
        .iter()
        .map(|f| std::fs::read(dir.join(f)).unwrap())
        .collect();

    let again = run(&["init", "--dir", dir.to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(1));
    let err = text(&again.stderr);
    assert!(err.contains(&dir.join("admin.token").display().to_string()), "names the file: {err}");
    assert!(err.contains("--force"), "says how to proceed: {err}");
    let after: Vec<Vec<u8>> = ["node.toml", "admin.token", "cluster.key", "tls/server.key"]
        .iter()
        .map(|f| std::fs::read(dir.join(f)).unwrap())
        .collect();
    assert_eq!(before, after, "nothing changed");

    let forced = run(&["init", "--dir", dir.to_str().unwrap(), "--force"]);
    assert!(forced.status.success(), "{}", text(&forced.stderr));
    assert_ne!(std::fs::read(dir.join("cluster.key")).unwrap(), before[2], "new secret");
    assert_ne!(std::fs::read(dir.join("tls/server.key")).unwrap(), before[3], "new key");
    assert_eq!(mode(&dir.join("cluster.key")), 0o600);
    assert_eq!(mode(&dir.join("tls/server.key")), 0o600);
}

#[test]
fn init_refuses_when_any_one_file_exists_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir(dir.join("tls")).unwrap();
    std::fs::write(dir.join("tls/server.crt"), "mine").unwrap();
    let out = run(&["init", "--dir", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains(&dir.join("tls/server.crt").display().to_string()), "{}", text(&out.stderr));
    assert_eq!(std::fs::read_to_string(dir.join("tls/server.crt")).unwrap(), "mine");
    for f in ["node.toml", "admin.token", "cluster.key", "tls/server.key"] {
        assert!(!dir.join(f).exists(), "{f} written although init refused");
    }
}

/// The written config runs: with the binds moved to ephemeral loopback
/// ports, a node starts with the TLS files and token `init` wrote.
#[tokio::test]
async fn init_config_starts_a_node() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let out = run(&["init", "--dir", dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let config = std::fs::read_to_string(dir.join("node.toml"))
        .unwrap()
        .replace("\"0.0.0.0:80\"", "\"127.0.0.1:0\"")
        .replace("\"0.0.0.0:443\"", "\"127.0.0.1:0\"")
        .replace("listen = \"127.0.0.1:9100\"", "listen = \"127.0.0.1:0\"");
    let path = dir.join("node.toml");
    std::fs::write(&path, config).unwrap();
    let cfg = sysmanage_node::config::load_file(&path).unwrap_or_else(|e| panic!("{e}"));
    assert!(cfg.admin.token.is_some(), "the admin token is read");
    let node = sysmanage_node::runtime::Node::start_with_path(cfg, Some(path)).await.expect("node starts");
    let http = node.addr("http").unwrap();
    assert!(node.addr("https").is_some());
    let (status, _, body) = support::get(&support::client(), http, "/health").await;
    assert_eq!((status.as_u16(), body.as_str()), (200, "healthy\n"));
    node.stop().await;
}
