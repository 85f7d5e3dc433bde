//! The stats page (`/stats` on the admin listener): its files and headers
//! over plain HTTP, and the page itself in a real browser.
//!
//! The browser tests drive Debian's `chromium` through `chromedriver`
//! (package `chromium-driver`) over WebDriver (fantoccini). A fresh machine
//! has no browser, so they are `#[ignore]`d by `cargo test`; `.ci/run`
//! installs both packages and runs them with `--ignored`. Without the
//! browser they fail and say what to install; they never pass silently.
//!
//! `SYSMANAGE_CAPTURE_DOCS=1` also writes the screenshots to `docs/src/images/`
//! (1280×800 and 375×800), as `tui_e2e::capture_docs` does for `top`.

use crate::support;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use http::StatusCode;
use support::ws::{admin_token_line, agent_connect, ws_servers, WsBackend, ADMIN_TOKEN};
use support::*;
use sysmanage_node::api::Status;

/// A pool "p" of two WebSocket backends named api-1 and api-2, checked
/// every 200 ms, agents' WebSockets routed to it, `/api/login` behind the
/// zone "login" (5/s, burst 10), and the admin token ([`ADMIN_TOKEN`]) in a
/// file.
async fn node_with_two_backends() -> (sysmanage_node::runtime::Node, WsBackend, WsBackend, tempfile::TempDir) {
    let (a, b) = (WsBackend::start("api-1").await, WsBackend::start("api-2").await);
    let dir = tempfile::tempdir().unwrap();
    let checks = r#"checks = [{ path = "/api/health", interval = "200ms", timeout = "150ms", fall = 1, rise = 1 }]"#;
    let pool = format!("{checks}\n{}", ws_servers(&[&a, &b], ""));
    // Agents' WebSockets, and a login route behind a rate-limit zone.
    let routes = "[[rate_limits]]\nname = \"login\"\nrate = \"5/s\"\nburst = 10\n\n\
                  [[routes]]\nname = \"login\"\npath_prefix = \"/api/login\"\npool = \"p\"\nrate_limit = \"login\"\n\n\
                  [[routes]]\nname = \"ws\"\npath_prefix = \"/api/agent/connect\"\npool = \"p\"\nwebsocket = true\n";
    let node = start_node(&config_admin(&pool, routes, &admin_token_line(dir.path()))).await;
    (node, a, b, dir)
}

fn admin_url(node: &sysmanage_node::runtime::Node, path: &str) -> String {
    format!("http://{}{path}", node.admin.expect("admin enabled"))
}

async fn status(node: &sysmanage_node::runtime::Node) -> Status {
    let (code, _, body) = get(&client(), node.admin.unwrap(), "/api/v1/status").await;
    assert_eq!(code, StatusCode::OK, "{body}");
    serde_json::from_str(&body).unwrap()
}

// ---- over plain HTTP ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_file_is_served_with_its_type_and_headers_and_the_root_redirects() {
    let (node, _a, _b, _dir) = node_with_two_backends().await;
    let admin = node.admin.unwrap();
    let c = client();
    for (path, kind) in [
        ("/stats", "text/html; charset=utf-8"),
        ("/stats/stats.js", "text/javascript; charset=utf-8"),
        ("/stats/stats.css", "text/css; charset=utf-8"),
    ] {
        let (code, h, body) = get(&c, admin, path).await;
        assert_eq!(code, StatusCode::OK, "{path}");
        assert_eq!(h["content-type"], kind, "{path}");
        assert_eq!(h["cache-control"], "no-cache", "{path}");
        assert_eq!(h["x-frame-options"], "DENY", "{path}");
        assert_eq!(h["referrer-policy"], "no-referrer", "{path}");
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"), "{csp}");
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        assert!(body.len() > 500, "{path} is the embedded file");
        // Revalidation: the same ETag answers 304 without a body.
        let etag = h["etag"].clone();
        let req = http::Request::get(format!("http://{admin}{path}"))
            .header("if-none-match", etag)
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        let (code, _, body) = send(&c, req).await;
        assert_eq!((code, body.as_str()), (StatusCode::NOT_MODIFIED, ""), "{path}");
    }
    for path in ["/", "/stats/"] {
        let (code, h, _) = get(&c, admin, path).await;
        assert_eq!((code, h["location"].to_str().unwrap()), (StatusCode::FOUND, "/stats"), "{path}");
    }
    let (code, _, body) = get(&c, admin, "/stats/nothing.js").await;
    assert_eq!(code, StatusCode::NOT_FOUND, "{body}");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_is_off_with_stats_false() {
    let b = Backend::start("b").await;
    let node = start_node(&config_admin(&servers(&[(&b, "")]), "", "stats = false")).await;
    let c = client();
    for path in ["/", "/stats", "/stats/stats.js"] {
        let (code, _, body) = get(&c, node.admin.unwrap(), path).await;
        assert_eq!(code, StatusCode::NOT_FOUND, "{path}");
        assert!(body.contains("stats = false"), "{path}: {body}");
    }
    // The API the page reads is still there.
    assert_eq!(get(&c, node.admin.unwrap(), "/api/v1/status").await.0, StatusCode::OK);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_shows_bound_listeners_tunnels_and_rates_the_page_reads() {
    let (node, a, _b, _dir) = node_with_two_backends().await;
    let http = node.addr("http").unwrap();
    // The config says port 0; the status says the port the listener got.
    let s = status(&node).await;
    assert_eq!(s.listeners[0].bind, "127.0.0.1:0");
    assert_eq!(s.listeners[0].address.as_deref(), Some(http.to_string().as_str()));
    assert!(!s.listeners[0].tls);
    assert!(s.node.memory_bytes.is_some_and(|m| m > 1 << 20), "{:?}", s.node.memory_bytes);
    assert!(s.node.cpu_percent.is_some());
    // An agent's tunnel counts on its listener and on its server.
    let (agent, _) = agent_connect(http, "agent-1").await.expect("the agent's tunnel opens");
    wait_until(Duration::from_secs(5), "the tunnel is counted", || async {
        let s = status(&node).await;
        let on: u64 = s.pools[0].servers.iter().map(|sv| sv.websocket_tunnels).sum();
        on == 1 && s.listeners[0].connections >= 1 && s.listeners[0].accepted >= 1
    })
    .await;
    drop(agent);
    wait_until(Duration::from_secs(5), "the closed tunnel is no longer counted", || async {
        status(&node).await.pools[0].servers.iter().all(|sv| sv.websocket_tunnels == 0)
    })
    .await;
    // The zone with its limit and what it refused: 30 logins at once from
    // one client, at most 10 (the burst) plus a few refilled pass.
    let c = client();
    let mut refused = 0;
    for _ in 0..30 {
        if get(&c, http, "/api/login").await.0 == StatusCode::TOO_MANY_REQUESTS {
            refused += 1;
        }
    }
    assert!(refused >= 10, "{refused} of 30 refused");
    let zones = status(&node).await.rate_limits;
    assert_eq!(zones.len(), 1, "{zones:?}");
    let z = &zones[0];
    assert_eq!((z.name.as_str(), z.limit.as_str(), z.cluster, z.keys), ("login", "5/s burst 10", false, 1));
    assert_eq!(z.rejected, refused);
    // Checks are counted: passed ones, then failed ones once api-1 dies.
    wait_until(Duration::from_secs(5), "a passed check of api-1", || async {
        let s = status(&node).await;
        let sv = &s.pools[0].servers[0];
        sv.checks_ok >= 1 && sv.last_check.as_ref().is_some_and(|c| c.ok)
    })
    .await;
    a.kill();
    wait_until(Duration::from_secs(5), "api-1 down with its failed checks counted", || async {
        let s = status(&node).await;
        let sv = &s.pools[0].servers[0];
        sv.state == "down" && sv.checks_failed >= 1 && sv.checks_ok >= 1
    })
    .await;
    node.stop().await;
}

// ---- in a browser ----

/// chromedriver and a headless chromium, stopped (by PID) on drop.
struct Browser {
    driver: Child,
    client: Option<Client>,
}

const DRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

impl Browser {
    async fn start(width: u32, height: u32) -> Browser {
        for (bin, package) in [(DRIVER, "chromium-driver"), (CHROMIUM, "chromium")] {
            assert!(
                std::path::Path::new(bin).exists(),
                "{bin} is missing: the stats page tests need Debian's chromium and chromium-driver \
                 (apt-get install chromium chromium-driver; .ci/run installs them). Package: {package}"
            );
        }
        let port = free_port("127.0.0.1".parse().unwrap());
        let driver = Command::new(DRIVER)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let mut browser = Browser { driver, client: None };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        wait_until(Duration::from_secs(10), "chromedriver listens", || async {
            tokio::net::TcpStream::connect(addr).await.is_ok()
        })
        .await;
        let caps = serde_json::json!({
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         format!("--window-size={width},{height}"), "--force-prefers-reduced-motion"],
            },
            "unhandledPromptBehavior": "ignore",
        });
        let caps = caps.as_object().unwrap().clone();
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&format!("http://{addr}"))
            .await
            .expect("a chromium session through chromedriver");
        browser.client = Some(client);
        browser
    }

    fn c(&self) -> &Client {
        self.client.as_ref().unwrap()
    }

    /// The text of the first element matching `css`, or "" when absent.
    async fn text(&self, css: &str) -> String {
        match self.c().find(Locator::Css(css)).await {
            Ok(e) => e.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// Waits (bounded) until the text of `css` satisfies `ok`.
    async fn wait_text(&self, css: &str, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let t = self.text(css).await;
            if ok(&t) {
                return t;
            }
            assert!(Instant::now() < deadline, "{what}: `{css}` still reads {t:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn click(&self, css: &str) {
        self.c().find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("{css}: {e}")).click().await.unwrap();
    }

    async fn enter_token(&self, token: &str) {
        self.click("#token-button").await;
        self.c().find(Locator::Css("#token-input")).await.unwrap().send_keys(token).await.unwrap();
        self.click("#token-form button[type=submit]").await;
    }

    /// Opens the actions of server `id` (`pool/server`), clicks `act`, which
    /// asks for confirmation, and confirms.
    async fn act_and_confirm(&self, id: &str, act: &str) {
        let row = format!("tr[data-id='{id}']");
        let open =
            self.c().execute(&format!("return document.querySelector(\"{row} details\").open;"), vec![]).await.unwrap();
        if open != serde_json::json!(true) {
            self.click(&format!("{row} summary")).await;
        }
        self.click(&format!("{row} button[data-act={act}]")).await;
        let question = self.c().get_alert_text().await.expect("a confirmation is asked");
        assert!(!question.is_empty());
        self.c().accept_alert().await.unwrap();
    }

    async fn screenshot(&self, name: &str) {
        let png = self.c().screenshot().await.unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        let dir = if std::env::var_os("SYSMANAGE_CAPTURE_DOCS").is_some() {
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/src/images")
        } else {
            std::env::temp_dir()
        };
        std::fs::write(dir.join(name), png).unwrap();
    }

    async fn close(mut self) {
        if let Some(c) = self.client.take() {
            let _ = c.close().await;
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // chromedriver ends its chromium with the session (`close`); a
        // failed test gets here first, and SIGTERM lets it clean up.
        let pid = self.driver.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.driver.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

const ROW_1: &str = "tr[data-id='p/api-1'] td:nth-child(2)";
const ROW_2: &str = "tr[data-id='p/api-2'] td:nth-child(2)";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromium and chromium-driver: .ci/run installs them and runs this with --ignored"]
async fn browser_the_page_follows_the_node_and_drives_it_with_the_token() {
    let (node, a, _b, _dir) = node_with_two_backends().await;
    let browser = Browser::start(1280, 800).await;
    browser.c().goto(&admin_url(&node, "/stats")).await.unwrap();
    browser.wait_text(ROW_1, "api-1 shown up", |t| t.starts_with("up")).await;
    browser.wait_text(ROW_2, "api-2 shown up", |t| t.starts_with("up")).await;
    // How long the page took to load, for the record (not a timed test):
    // the first load, in a browser that just started, and a second one.
    let load = "const n = performance.getEntriesByType('navigation')[0]; return n.loadEventEnd - n.startTime;";
    eprintln!("stats page loaded in {} ms", browser.c().execute(load, vec![]).await.unwrap());
    browser.c().refresh().await.unwrap();
    browser.wait_text(ROW_2, "api-2 shown up again", |t| t.starts_with("up")).await;
    eprintln!("stats page loaded again in {} ms", browser.c().execute(load, vec![]).await.unwrap());
    // Read-only until a token is entered.
    let mode = browser.text("#mode").await;
    assert!(mode.starts_with("Read-only"), "{mode}");
    let drain = browser.c().find(Locator::Css("tr[data-id='p/api-2'] button[data-act=drain]")).await.unwrap();
    assert_eq!(drain.attr("disabled").await.unwrap().as_deref(), Some("true"));
    // A mark that a reload of the page would lose.
    browser.c().execute("window.__sameDocument = 42; return 0;", vec![]).await.unwrap();

    // A backend dies: its row turns down without reloading the page.
    a.kill();
    browser.wait_text(ROW_1, "api-1 shown down", |t| t.starts_with("down")).await;
    let same = browser.c().execute("return window.__sameDocument;", vec![]).await.unwrap();
    assert_eq!(same, serde_json::json!(42), "the page was not reloaded");

    // Some traffic for the rates, the sparklines and the zone (bounded: 300
    // requests over about a second, then 30 logins back to back, more than
    // the zone's burst of 10).
    let (c, http) = (client(), node.addr("http").unwrap());
    for i in 0..300 {
        let _ = get(&c, http, "/").await;
        if i % 30 == 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    for _ in 0..30 {
        let _ = get(&c, http, "/api/login").await;
    }
    browser
        .wait_text("#zones tbody tr td:nth-child(5)", "the zone's rejections shown", |t| t != "0" && !t.is_empty())
        .await;

    // A wrong token: an error, and nothing changes.
    browser.enter_token("not-the-token").await;
    browser.act_and_confirm("p/api-2", "drain").await;
    let banner = browser.wait_text("#banner", "the refusal shown", |t| t.contains("401")).await;
    assert!(banner.contains("wrong admin token"), "{banner}");
    assert_eq!(status(&node).await.pools[0].servers[1].admin, "normal");

    // The right token: drain api-2, seen in the page and in the API.
    browser.click("#token-button").await; // forgets the wrong one
    browser.enter_token(ADMIN_TOKEN).await;
    browser.act_and_confirm("p/api-2", "drain").await;
    browser.wait_text(ROW_2, "api-2 shown draining", |t| t.starts_with("draining")).await;
    let s = status(&node).await;
    assert_eq!(s.pools[0].servers[1].admin, "draining");
    assert!(s.events.iter().any(|e| e.message == "normal -> draining"), "{:?}", s.events);
    browser.wait_text("#events", "the action in the events", |t| t.contains("normal -> draining")).await;

    // The filter hides other servers' rows.
    browser.c().find(Locator::Css("#filter")).await.unwrap().send_keys("api-2").await.unwrap();
    let hidden = browser
        .c()
        .execute("return document.querySelector(\"tr[data-id='p/api-1']\").classList.contains('hidden');", vec![])
        .await
        .unwrap();
    assert_eq!(hidden, serde_json::json!(true));
    browser.c().find(Locator::Css("#filter")).await.unwrap().clear().await.unwrap();
    browser
        .c()
        .execute("document.getElementById('filter').dispatchEvent(new Event('input')); return 0;", vec![])
        .await
        .unwrap();

    // Sorting by a column header, both ways: api-1 has failed checks, api-2 none.
    let rows = "return [...document.querySelectorAll('section.pool tbody tr')].map(r => r.dataset.id);";
    let header = "section.pool th[data-key=failed]";
    browser.click(&format!("{header} button")).await;
    assert_eq!(browser.c().execute(rows, vec![]).await.unwrap(), serde_json::json!(["p/api-2", "p/api-1"]));
    let sort = browser.c().find(Locator::Css(header)).await.unwrap().attr("aria-sort").await.unwrap();
    assert_eq!(sort.as_deref(), Some("ascending"));
    browser.click(&format!("{header} button")).await;
    assert_eq!(browser.c().execute(rows, vec![]).await.unwrap(), serde_json::json!(["p/api-1", "p/api-2"]));
    // The keyboard: Enter on api-1's closed actions opens them.
    let summary = browser.c().find(Locator::Css("tr[data-id='p/api-1'] summary")).await.unwrap();
    summary.send_keys("\u{E007}").await.unwrap(); // WebDriver's Enter key
    let open = browser.c().execute("return document.querySelector(\"tr[data-id='p/api-1'] details\").open;", vec![]);
    assert_eq!(open.await.unwrap(), serde_json::json!(true), "Enter opens the actions");

    // For the pictures: actions closed, nothing focused, rows done flashing.
    let tidy =
        "document.querySelectorAll('details').forEach(d => d.open = false); document.activeElement.blur(); return 0;";
    browser.c().execute(tidy, vec![]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    browser.screenshot("stats-wide.png").await;
    browser.c().set_window_size(375, 800).await.unwrap();
    // The pools, which is what a phone's first look is for.
    browser.c().execute("document.getElementById('pools-h').scrollIntoView(); return 0;", vec![]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    browser.screenshot("stats-narrow.png").await;
    browser.close().await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromium and chromium-driver: .ci/run installs them and runs this with --ignored"]
async fn browser_a_three_node_cluster_shows_three_live_members() {
    const SECRET: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";
    let b = Backend::start("s1").await;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("cluster.key");
    write_secret(&secret, SECRET);
    let mut nodes = Vec::new();
    let mut seed = None;
    for i in 0..3u8 {
        let ip = std::net::IpAddr::from([127, 0, 0, 60 + i]);
        let gossip = SocketAddr::new(ip, free_port(ip));
        let seeds = seed.map(|s| format!("seeds = [\"{s}\"]")).unwrap_or_default();
        let extra = format!(
            "[node]\nname = \"n{i}\"\ndata_dir = \"{}\"\n[cluster]\nlisten = \"{gossip}\"\n{seeds}\nsecret_file = \"{}\"\ngossip_interval = \"100ms\"\n",
            dir.path().join(format!("n{i}")).display(),
            secret.display()
        );
        nodes.push(start_node(&config(&servers(&[(&b, "")]), &extra)).await);
        seed.get_or_insert(gossip);
    }
    let browser = Browser::start(1280, 800).await;
    browser.c().goto(&admin_url(&nodes[0], "/stats")).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let states = browser
            .c()
            .execute(
                "return [...document.querySelectorAll('#members tbody tr td:nth-child(2)')].map(td => td.textContent);",
                vec![],
            )
            .await
            .unwrap();
        let states: Vec<String> = serde_json::from_value(states).unwrap();
        if states.len() == 3 && states.iter().all(|s| s == "live") {
            break;
        }
        assert!(Instant::now() < deadline, "three live members expected, the page shows {states:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let facts = browser.text("#cluster-facts").await;
    assert!(facts.starts_with("3 live, 0 dead"), "{facts}");
    browser.close().await;
    for n in nodes {
        n.stop().await;
    }
}
