//! `sysmanage-node top` end to end: the real binary in a real terminal
//! (tmux, which CI installs), against a node started in-process with fake
//! backends and an admin token. Keys go in with `tmux send-keys`; the screen
//! comes back with `tmux capture-pane`. Each test runs its own tmux server
//! (`-L`) and kills only that server.
//!
//! `cargo test --test tools -- --ignored capture_docs` also writes the
//! dashboard captures in `docs/top-*.txt` (see `bench/capture_top.sh`).

use crate::support;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use support::process::{output, BIN};
use support::*;
use sysmanage_node::api::Status;

const TOKEN: &str = "e2e-admin-token";
/// Printed by the shell after `top` returns, with its exit code and whether
/// it left the terminal in raw mode.
const AFTER: &str =
    "echo \"top exited with $?\"; stty -a | grep -q -- -icanon && echo 'tty: raw' || echo 'tty: cooked'";

/// A tmux server of our own with one window running `sh`.
struct Tmux {
    socket: String,
}

impl Tmux {
    /// Starts the server and waits for the shell's prompt (keys typed before
    /// it would be echoed ahead of it and garble the screen).
    async fn start(width: u16, height: u16) -> Tmux {
        static N: AtomicU32 = AtomicU32::new(0);
        let socket = format!("smn-top-e2e-{}-{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst));
        let t = Tmux { socket };
        let (w, h) = (width.to_string(), height.to_string());
        t.run(&["-f", "/dev/null", "new-session", "-d", "-s", "e2e", "-x", &w, "-y", &h, "env PS1='$ ' sh"]);
        t.wait_for("the shell prompt", Duration::from_secs(10), |s| s.starts_with('$')).await;
        t
    }

    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .args(["-u", "-L", &self.socket])
            .args(args)
            .env_remove("TMUX")
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("tmux must be installed for this test (apt-get install -y tmux): {e}"));
        assert!(out.status.success(), "tmux {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Types `text` literally, then Enter if asked.
    fn type_line(&self, text: &str) {
        self.run(&["send-keys", "-t", "e2e", "-l", text]);
        self.run(&["send-keys", "-t", "e2e", "Enter"]);
    }

    /// Sends keys by tmux name (`d`, `y`, `Enter`, `Down`, ...).
    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "e2e"];
        args.extend_from_slice(keys);
        self.run(&args);
    }

    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "e2e"])
    }

    fn resize(&self, width: u16, height: u16) {
        self.run(&["resize-window", "-t", "e2e", "-x", &width.to_string(), "-y", &height.to_string()]);
    }

    /// Waits until the screen satisfies `cond`; panics with the screen.
    async fn wait_for(&self, what: &str, limit: Duration, cond: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let screen = self.screen();
            if cond(&screen) {
                return screen;
            }
            if start.elapsed() > limit {
                panic!("timed out after {limit:?} waiting for the screen to show {what}; it shows:\n{screen}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn wait_text(&self, text: &str) -> String {
        self.wait_for(&format!("{text:?}"), Duration::from_secs(15), |s| s.contains(text)).await
    }

    /// Waits for the shell's report after `top` returned (see [`AFTER`]):
    /// the screen, top's exit code, and whether the terminal is back in
    /// canonical (cooked) mode.
    async fn wait_exit(&self) -> (String, i32, bool) {
        let screen = self
            .wait_for("the shell's report after top", Duration::from_secs(15), |s| {
                s.lines().any(|l| l.starts_with("tty: raw") || l.starts_with("tty: cooked"))
            })
            .await;
        let code = screen
            .lines()
            .find_map(|l| l.split_once("top exited with ").map(|(_, code)| code).filter(|c| !c.starts_with('$')))
            .and_then(|c| c.trim().parse().ok())
            .unwrap_or_else(|| panic!("no exit code on the screen:\n{screen}"));
        let cooked = screen.lines().any(|l| l.trim_end() == "tty: cooked");
        (screen, code, cooked)
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux").args(["-L", &self.socket, "kill-server"]).stderr(Stdio::null()).status();
    }
}

fn top_command(admin: &str, token_file: Option<&std::path::Path>, env: &str) -> String {
    let token = token_file.map(|p| format!(" --token-file {}", p.display())).unwrap_or_default();
    format!("{env}{BIN} top --admin {admin}{token}; {AFTER}")
}

fn token_file() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("admin.token");
    std::fs::write(&path, format!("{TOKEN}\n")).unwrap();
    (dir, path)
}

async fn status(admin: &str) -> Status {
    let c = client();
    let req = Request::get(format!("{admin}/api/v1/status")).body(Full::new(Bytes::new())).unwrap();
    let (code, _, body) = send(&c, req).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    serde_json::from_str(&body).unwrap()
}

async fn server_state(admin: &str, server: &str) -> String {
    let s = status(admin).await;
    s.pools.iter().flat_map(|p| &p.servers).find(|s| s.name == server).unwrap().state.clone()
}

const CHECKS: &str =
    r#"checks = [{ path = "/api/health", interval = "200ms", timeout = "150ms", fall = 2, rise = 1 }]"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backends_pane_shows_the_servers_d_then_y_drains_the_selected_one_and_q_restores_the_terminal() {
    let (alpha, bravo) = (Backend::start("alpha").await, Backend::start("bravo").await);
    let (_dir, token) = token_file();
    let pool = format!("{CHECKS}\n{}", servers(&[(&alpha, ""), (&bravo, "")]));
    let admin_line = format!("token_file = \"{}\"", token.display());
    let node = start_node(&config_admin(&pool, "", &admin_line)).await;
    let admin = format!("http://{}", node.admin.unwrap());
    wait_until(Duration::from_secs(5), "both servers checked", || async {
        status(&admin).await.pools[0].servers.iter().all(|s| s.last_check.is_some())
    })
    .await;

    let tmux = Tmux::start(120, 40).await;
    tmux.type_line(&top_command(&admin, Some(&token), ""));
    tmux.wait_text("● live").await;
    tmux.keys(&["2"]);
    let screen = tmux
        .wait_for("both servers with address and check", Duration::from_secs(10), |s| {
            s.contains(&alpha.addr.to_string()) && s.contains(&bravo.addr.to_string()) && s.matches(" ok ").count() >= 2
        })
        .await;
    let row = |screen: &str, name: &str| screen.lines().find(|l| l.contains(name)).unwrap_or("").to_string();
    assert!(screen.contains("pool p · round_robin · 2/2 available"), "{screen}");
    assert!(row(&screen, "alpha").contains("▶ alpha"), "alpha is selected first:\n{screen}");
    assert!(row(&screen, "alpha").contains(" up "), "{screen}");

    // d asks first; nothing changes until y.
    tmux.keys(&["d"]);
    tmux.wait_text("Drain p/alpha?").await;
    assert_eq!(server_state(&admin, "alpha").await, "up", "nothing is sent before confirmation");
    tmux.keys(&["y"]);
    wait_until(Duration::from_secs(10), "alpha draining per the admin API", || async {
        server_state(&admin, "alpha").await == "draining"
    })
    .await;
    assert_eq!(server_state(&admin, "bravo").await, "up", "only the selected server is drained");
    // The API's answer is shown, and the table follows at the next poll.
    tmux.wait_text("p/alpha: normal -> draining").await;
    tmux.wait_for("alpha shown draining", Duration::from_secs(5), |s| row(s, "alpha").contains("draining")).await;

    // Follows a resize down to 80×24: the short key hints and the box edge
    // in the last column.
    tmux.resize(80, 24);
    let screen = tmux
        .wait_for("the 80-column layout, drawn to its bottom edge", Duration::from_secs(10), |s| {
            // The capture can land in the middle of a redraw: wait for the
            // box's bottom edge too, not only its top.
            let lines: Vec<&str> = s.lines().collect();
            lines.len() == 24
                && lines[2].ends_with('┐')
                && lines[2].chars().count() == 80
                && lines[22].starts_with('└')
                && s.contains("bravo")
        })
        .await;
    assert!(!screen.contains(&alpha.addr.to_string()), "no address column at 80 columns:\n{screen}");
    tmux.resize(120, 40);
    tmux.wait_text(&alpha.addr.to_string()).await;

    tmux.keys(&["q"]);
    let (screen, code, cooked) = tmux.wait_exit().await;
    assert_eq!(code, 0, "{screen}");
    assert!(cooked, "raw mode left on:\n{screen}");
    assert!(!screen.contains("Backends"), "the alternate screen is gone:\n{screen}");
    // The shell takes commands again.
    tmux.type_line("echo still-$((40+2))");
    tmux.wait_text("still-42").await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_node_is_reported_and_retried_until_it_answers() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let admin = format!("http://127.0.0.1:{port}");
    let tmux = Tmux::start(100, 30).await;
    tmux.type_line(&top_command(&admin, None, ""));
    let screen = tmux.wait_text("✖ unreachable").await;
    assert!(screen.contains("No data yet"), "{screen}");
    assert!(screen.contains(&format!("cannot reach the admin API at {admin}")), "{screen}");
    // Still there, still counting.
    tmux.wait_for("unreachable for 2 s or more", Duration::from_secs(15), |s| {
        s.split("node unreachable for ").nth(1).is_some_and(|rest| {
            let n: String = rest.chars().take_while(char::is_ascii_digit).collect();
            rest[n.len()..].starts_with('m') || n.parse::<u32>().is_ok_and(|n| n >= 2)
        })
    })
    .await;

    // Now a node appears on that port: top picks it up by itself.
    let backend = Backend::start("late").await;
    let toml = NodeToml::new()
        .node("name = \"late-node\"")
        .admin_listen(&format!("127.0.0.1:{port}"))
        .listener("http", "")
        .pool("p", &servers(&[(&backend, "")]))
        .route("default", "/", "p", "");
    let node = start_node(&toml.to_string()).await;
    let screen = tmux.wait_text("● live").await;
    assert!(screen.contains("late-node"), "{screen}");
    assert!(!screen.contains("unreachable"), "{screen}");

    // Without a token, actions say why instead of asking.
    tmux.keys(&["2", "d"]);
    tmux.wait_text("write actions unavailable: no admin token").await;
    tmux.keys(&["q"]);
    let (screen, code, cooked) = tmux.wait_exit().await;
    assert!(code == 0 && cooked, "{screen}");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_restores_the_terminal_before_the_message_is_printed() {
    let admin = "http://127.0.0.1:9"; // discard port: nothing answers
    let tmux = Tmux::start(100, 30).await;
    // No backtrace: it would scroll the message off the screen.
    let env = format!("RUST_BACKTRACE=0 {}=P ", sysmanage_node::tui::PANIC_KEY_ENV);
    tmux.type_line(&top_command(admin, None, &env));
    tmux.wait_text("✖ unreachable").await;
    tmux.keys(&["P"]);
    let (screen, code, cooked) = tmux.wait_exit().await;
    assert_eq!(code, 101, "a panic exits 101:\n{screen}");
    assert!(cooked, "raw mode left on after a panic:\n{screen}");
    assert!(screen.contains("test panic on key"), "the panic message is readable:\n{screen}");
    assert!(!screen.contains("No data yet"), "the alternate screen is gone:\n{screen}");
}

#[test]
fn without_a_terminal_top_says_so_and_exits_2() {
    let out = output(&["top", "--admin", "http://127.0.0.1:9"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("needs a terminal"), "{err}");
}

#[test]
fn an_unreadable_token_file_is_refused_before_the_screen_is_taken() {
    let out = output(&["top", "--token-file", "/nonexistent/admin.token"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot read the admin token file /nonexistent/admin.token"), "{err}");
}

/// A demo-like node (two pools, a draining, a down and a maintained server,
/// sticky agents, rate-limited logins, some traffic), captured pane by pane
/// into `docs/top-*.txt`. Takes about half a minute; run on purpose:
/// `cargo test --test tools -- --ignored capture_docs`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "writes docs/top-*.txt; run on purpose"]
async fn capture_docs() {
    let names = ["api-1", "api-2", "api-3", "api-4", "ws-1", "ws-2"];
    let mut backends = Vec::new();
    for n in names {
        backends.push(Backend::start(n).await);
    }
    let (dir, token) = token_file();
    let server = |b: &Backend, extra: &str| format!("{{ addr = \"{}\", name = \"{}\"{extra} }}", b.addr, b.state.name);
    // The `primary` pool reuses two addresses under other names.
    let ui_a = format!("{{ addr = \"{}\", name = \"ui-a\" }}", backends[2].addr);
    let ui_b = format!("{{ addr = \"{}\", name = \"ui-b\" }}", backends[0].addr);
    let toml = format!(
        r#"
[node]
name = "lb1"
data_dir = "{data}"
[log]
level = "error"
access_log = false
[admin]
listen = "127.0.0.1:0"
token_file = "{token}"
[[listeners]]
name = "http"
bind = "127.0.0.1:0"
[[rate_limits]]
name = "auth"
rate = "5/s"
burst = 5
[[pools]]
name = "api"
balance = "least_conn"
servers = [{a1}, {a2}, {a3}, {a4}]
{CHECKS}
[[pools]]
name = "agents"
balance = "least_conn"
servers = [{w1}, {w2}]
{CHECKS}
affinity = {{ key = "header:x-agent-hostname", ttl = "1h" }}
[[pools]]
name = "ui"
balance = "primary"
servers = [{u1}, {u2}]
{CHECKS}
[[routes]]
name = "ui"
path_prefix = "/ui/"
pool = "ui"
[[routes]]
name = "agents"
path_prefix = "/api/agent/"
pool = "agents"
[[routes]]
name = "auth"
path_prefix = "/api/auth/"
pool = "api"
rate_limit = "auth"
[[routes]]
name = "default"
path_prefix = "/"
pool = "api"
"#,
        data = dir.path().display(),
        token = token.display(),
        a1 = server(&backends[0], ", weight = 3"),
        a2 = server(&backends[1], ", weight = 3"),
        a3 = server(&backends[2], ", weight = 3"),
        a4 = server(&backends[3], ", backup = true"),
        w1 = server(&backends[4], ""),
        w2 = server(&backends[5], ""),
        u1 = ui_a,
        u2 = ui_b,
    );
    let node = start_node(&toml).await;
    let http = node.addr("http").unwrap();
    let admin = format!("http://{}", node.admin.unwrap());
    backends[2].set_health(503);
    backends[0].set_mode(Mode::Delay(Duration::from_millis(2)));
    backends[1].set_mode(Mode::Delay(Duration::from_millis(8)));
    let c = client();
    let act = |path: String| {
        let c = c.clone();
        async move {
            let req = Request::builder()
                .method(Method::POST)
                .uri(path)
                .header("authorization", format!("Bearer {TOKEN}"))
                .body(Full::new(Bytes::new()))
                .unwrap();
            assert_eq!(send(&c, req).await.0, StatusCode::OK);
        }
    };
    act(format!("{admin}/api/v1/pools/api/servers/api-4/maintenance")).await;

    // Traffic for the whole capture: bounded in count and time.
    let traffic = {
        let c = c.clone();
        tokio::spawn(async move {
            for i in 0..8000u32 {
                let path = match i % 10 {
                    0..=4 => "/",
                    5 => "/ui/",
                    6 | 7 => "/api/agent/connect",
                    _ => "/api/auth/login",
                };
                // 40 agents, each coming back every 400 requests.
                let req = Request::get(format!("http://{http}{path}"))
                    .header("x-agent-hostname", format!("agent-{:03}", i / 10 % 40))
                    .body(Full::new(Bytes::new()))
                    .unwrap();
                let _ = c.request(req).await;
                tokio::time::sleep(Duration::from_millis(8 + u64::from(i % 7))).await;
            }
        })
    };
    wait_until(Duration::from_secs(5), "api-3 down", || async { server_state(&admin, "api-3").await == "down" }).await;

    let tmux = Tmux::start(110, 32).await;
    tmux.type_line(&top_command(&admin, Some(&token), ""));
    tmux.wait_text("● live").await;
    // Let the sparklines fill a little (this is a capture, not a check: a
    // plain wait is what is wanted), then drain api-2 through the dashboard.
    tokio::time::sleep(Duration::from_secs(40)).await;
    tmux.keys(&["2", "j", "d"]);
    tmux.wait_text("Drain api/api-2?").await;
    tmux.keys(&["y"]);
    tmux.wait_text("api/api-2: normal -> draining").await;
    tmux.wait_for("api-2 draining", Duration::from_secs(5), |s| {
        s.lines().any(|l| l.contains("api-2") && l.contains("draining"))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    let docs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs");
    let save = |name: &str, screen: String| {
        let header = format!(
            "`sysmanage-node top` at 110×32: the {name} pane (tmux capture-pane of the real binary against a\n\
             node with fake backends; regenerate with bench/capture_top.sh)\n\n"
        );
        std::fs::write(docs.join(format!("top-{name}.txt")), header + &screen).unwrap();
    };
    tmux.keys(&["Escape"]);
    save("backends", tmux.wait_text("P95").await);
    tmux.keys(&["1"]);
    save("overview", tmux.wait_text("Traffic").await);
    tmux.keys(&["3"]);
    save("cluster", tmux.wait_text("standalone node").await);
    tmux.keys(&["4", "/"]);
    tmux.run(&["send-keys", "-t", "e2e", "-l", "agent-007"]);
    tmux.keys(&["Enter"]);
    save("sessions", tmux.wait_text("agent-007 → agents/").await);
    tmux.keys(&["5"]);
    save("events", tmux.wait_text("normal -> draining").await);
    tmux.keys(&["q"]);
    assert_eq!(tmux.wait_exit().await.1, 0);
    traffic.abort();
    node.stop().await;
}
