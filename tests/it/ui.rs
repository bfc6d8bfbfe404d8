//! The status page (issue #16, points 1 and 7): its headers, weight and content over HTTP,
//! then in a real browser — Debian's chromium driven over WebDriver (fantoccini) by
//! chromedriver, both started by the test — against a running sipdns probing two real
//! sipp servers: sign in, see both up, kill one and see it turn down within the refresh
//! bound and the phone's answer change, drain the other by click and see the drain in
//! `sipdns targets` and the state file, reload and stay signed in, no console errors.

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use fantoccini::{Client as Browser, ClientBuilder, Locator};
use serde_json::{Value, json};

use crate::common::process::{Peer, free_port, require};
use crate::{
    cli::office,
    common::{
        http::Client,
        server::{self, API_TOKEN},
    },
};

/// Bytes of one answer as sent: status line, headers and body.
fn wire_size(r: &crate::common::http::Reply) -> usize {
    let head: usize = r.headers.iter().map(|(n, v)| n.len() + v.len() + 4).sum();
    17 + head + 2 + r.body.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_is_secured_light_and_shows_the_office() {
    let mut o = office(
        (Ipv4Addr::new(127, 0, 0, 33), Ipv4Addr::new(127, 0, 0, 34)),
        "",
    )
    .await;
    let open = Client::new(o.s.api.unwrap(), None);
    let mut weight = 0;
    let page = open.get("/").await;
    assert_eq!(page.status, 200);
    weight += wire_size(&page);
    let html = page.text();
    let csp = page.header("content-security-policy").unwrap();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("default-src 'none'"),
        "{csp}"
    );
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
        "{csp}"
    );
    assert_eq!(page.header("x-frame-options"), Some("DENY"));
    assert_eq!(page.header("cache-control"), Some("no-store"));
    // Without the token: readiness only, no data; no inline script or style anywhere.
    assert!(html.contains(">ready<"), "{html}");
    assert!(!html.contains(&o.key1.to_string()));
    assert!(!html.contains("style="), "inline style");
    for tag in html.split("<script").skip(1) {
        assert!(
            tag.trim_start().starts_with("src=\"/ui/app.js\""),
            "inline script: {tag}"
        );
    }
    for (path, ctype) in [
        ("/ui/app.js", "text/javascript"),
        ("/ui/app.css", "text/css"),
    ] {
        let r = open.get(path).await;
        assert_eq!(r.status, 200, "{path}");
        assert!(r.header("content-type").unwrap().starts_with(ctype));
        weight += wire_size(&r);
    }
    let r = open.get("/api/v1/ui/dashboard").await;
    assert_eq!(r.status, 401);
    assert!(!r.text().contains(&o.key1.to_string()));

    let r = o.api().get("/api/v1/ui/dashboard").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("cache-control"), Some("no-store"));
    weight += wire_size(&r);
    let dash = r.text();
    for want in [
        o.key1.to_string(),
        o.key2.to_string(),
        "sip1.pbx.example.org".to_owned(),
        "data-state=\"up\"".to_owned(),
        "<svg class=\"strip\"".to_owned(),
        "What a phone is told now".to_owned(),
        "_sip._udp.pbx.example.org".to_owned(),
        "NAPTR".to_owned(),
        "Zones".to_owned(),
    ] {
        assert!(dash.contains(&want), "{want} missing:\n{dash}");
    }
    assert!(
        !dash.contains("<script") && !dash.contains("style="),
        "{dash}"
    );
    eprintln!("status page first load: {weight} bytes (page, script, stylesheet, first dashboard)");
    assert!(weight < 100_000, "first load {weight} bytes");

    // A drained target shows who drained it and until when; the strip has data.
    let path = format!("/api/v1/targets/{}:{}/udp/drain", o.key2.ip, o.key2.port);
    let r = o
        .api()
        .json(
            "POST",
            &path,
            &[],
            &json!({"duration": "5m", "note": "<b>patch</b>", "by": "carol"}),
        )
        .await;
    assert_eq!(r.status, 200);
    let dash = o.api().get("/api/v1/ui/dashboard").await.text();
    assert!(
        dash.contains("data-state=\"drained\"") && dash.contains("drained by carol until 20"),
        "{dash}"
    );
    assert!(
        dash.contains("&lt;b&gt;patch&lt;/b&gt;") && !dash.contains("<b>patch"),
        "not escaped"
    );
    assert!(dash.contains("<rect class=\"u\""), "no probe in the strip");
    o.primary.stop();
    o.secondary.stop();
}

#[tokio::test]
async fn the_page_can_be_turned_off() {
    // Appended right after the `api:` block that start_with_api writes.
    let s = server::start_with_api("  ui: false\n", &[]).await;
    let c = Client::new(s.api.unwrap(), Some(API_TOKEN));
    for p in ["/", "/ui/app.js", "/ui/app.css", "/api/v1/ui/dashboard"] {
        assert_eq!(c.get(p).await.status, 404, "{p}");
    }
    assert_eq!(c.get("/api/v1/targets").await.status, 200);
}

/// chromedriver on a free loopback port and a WebDriver session of headless chromium with
/// a fresh profile.
async fn browser(dir: &std::path::Path) -> (Peer, Browser, u16) {
    let driver = require("chromedriver", "chromium-driver");
    let port = free_port();
    let mut cmd = Command::new(driver);
    cmd.args([
        format!("--port={port}"),
        "--allowed-ips=127.0.0.1".to_owned(),
    ]);
    let peer = Peer::spawn("chromedriver", cmd, dir.join("chromedriver.log"));
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let t = Instant::now();
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "chromedriver did not listen"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let b = session(port, &dir.join("profile"), &[]).await;
    (peer, b, port)
}

/// A new headless chromium session with a fresh profile in `profile`.
async fn session(port: u16, profile: &std::path::Path, extra: &[&str]) -> Browser {
    let chromium = require("chromium", "chromium");
    let mut args: Vec<String> = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1280,900",
    ]
    .iter()
    .chain(extra)
    .map(|a| (*a).to_owned())
    .collect();
    args.push(format!("--user-data-dir={}", profile.display()));
    let caps = json!({
        "goog:chromeOptions": {
            "binary": chromium,
            "args": args,
        },
        "goog:loggingPrefs": { "browser": "ALL" }
    });
    let Value::Object(caps) = caps else {
        unreachable!()
    };
    let mut last = None;
    for _ in 0..3 {
        match ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps.clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
        {
            Ok(b) => return b,
            Err(e) => last = Some(e),
        }
    }
    panic!("no WebDriver session: {last:?}");
}

/// The browser's console entries so far (chromedriver's log endpoint).
fn console(port: u16, session: &str) -> Vec<Value> {
    let mut r = ureq::post(&format!("http://127.0.0.1:{port}/session/{session}/se/log"))
        .header("Content-Type", "application/json")
        .send(json!({"type": "browser"}).to_string())
        .unwrap();
    let v: Value = serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
    v["value"]
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("no browser log from chromedriver: {v}"))
}

async fn js(b: &Browser, script: &str) -> Value {
    b.execute(script, vec![]).await.unwrap()
}

/// Polls the page until `script` returns true (bounded).
async fn wait_page(b: &Browser, what: &str, bound: Duration, script: &str) -> Duration {
    let t = Instant::now();
    loop {
        if js(b, script).await == json!(true) {
            return t.elapsed();
        }
        assert!(
            t.elapsed() < bound,
            "{what}: not on the page within {bound:?}; page text:\n{}",
            js(b, "return document.body.innerText").await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn state_is(key: &str, state: &str) -> String {
    format!("return !!document.querySelector('tr[data-target=\"{key}\"][data-state=\"{state}\"]')")
}

/// The SRV answer a phone gets, as the page lists it (answer section only).
const SRV_TOLD: &str = "const d = document.getElementById('explain-SRV-_sip._udp.pbx.example.org'); \
    if (!d) return ''; return [...d.parentElement.querySelectorAll('ul.records li:not(.additional)')] \
    .map(l => l.textContent).join('\\n')";

fn artifact(name: &str) -> PathBuf {
    // $CARGO_TARGET_DIR/<name>, next to the build (the test's tmp dir is target/tmp).
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().map_or(tmp.clone(), PathBuf::from).join(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_browser_signs_in_sees_failover_and_drains_by_click() {
    let mut o = office(
        (Ipv4Addr::new(127, 0, 0, 31), Ipv4Addr::new(127, 0, 0, 32)),
        "",
    )
    .await;
    let (k1, k2) = (o.key1.to_string(), o.key2.to_string());
    let bdir = tempfile::tempdir().unwrap();
    let (mut driver, b, port) = browser(bdir.path()).await;
    let session_id = b.session_id().await.unwrap().unwrap();
    let url = format!("{}/", o.api_url());

    b.goto(&url).await.unwrap();
    assert_eq!(
        js(&b, "return document.getElementById('ready').textContent").await,
        "ready"
    );
    assert_eq!(
        js(&b, "return document.getElementById('dash').children.length").await,
        0
    );
    // Sign in.
    b.find(Locator::Id("token"))
        .await
        .unwrap()
        .send_keys(API_TOKEN)
        .await
        .unwrap();
    b.find(Locator::Css("#signin button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let both_up = format!(
        "return !!document.querySelector('tr[data-target=\"{k1}\"][data-state=\"up\"]') \
         && !!document.querySelector('tr[data-target=\"{k2}\"][data-state=\"up\"]')"
    );
    wait_page(&b, "both targets up", Duration::from_secs(5), &both_up).await;
    let told = js(&b, SRV_TOLD).await;
    assert!(
        told.as_str().unwrap().contains("sip1.pbx.example.org")
            && told.as_str().unwrap().contains("sip2.pbx.example.org"),
        "{told}"
    );
    // First-load weight as the browser counted it (page, script, stylesheet, fetches).
    let weight = js(&b, "return performance.getEntries().filter(e => e.transferSize !== undefined).reduce((n, e) => n + e.transferSize, 0)").await;
    eprintln!(
        "status page in chromium, first load and first refreshes: {weight} bytes transferred"
    );
    assert!(weight.as_f64().unwrap() < 100_000.0, "{weight}");
    assert_eq!(
        js(&b, "return sessionStorage.getItem('sipdns.token')").await,
        API_TOKEN
    );
    assert_eq!(js(&b, "return document.cookie").await, "");

    // The primary dies: the page shows it down within 2 s of the API, and the phone's
    // answer loses it.
    o.primary.kill();
    let killed = Instant::now();
    let api_down = loop {
        if o.row(&o.key1).await["health"] == "down" {
            break Instant::now();
        }
        assert!(
            killed.elapsed() < Duration::from_secs(5),
            "the prober never saw it down"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    wait_page(
        &b,
        "primary down",
        Duration::from_secs(4),
        &state_is(&k1, "down"),
    )
    .await;
    let lag = api_down.elapsed();
    eprintln!(
        "page showed the transition {lag:?} after the API (kill to down: {:?})",
        api_down - killed
    );
    assert!(lag <= Duration::from_millis(2200), "page lagged {lag:?}");
    wait_page(&b, "answer without the primary", Duration::from_secs(3), &format!("const t = (() => {{ {SRV_TOLD} }})(); return t.includes('sip2.pbx') && !t.includes('sip1.pbx')")).await;

    // Drain the secondary for a minute by click.
    b.find(Locator::Css(&format!("button.drain[data-target=\"{k2}\"]")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_page(
        &b,
        "drain dialog",
        Duration::from_secs(2),
        "return document.getElementById('drain-dialog').open",
    )
    .await;
    b.find(Locator::Css("#drain-duration option[value='1m']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.find(Locator::Id("drain-note"))
        .await
        .unwrap()
        .send_keys("browser test")
        .await
        .unwrap();
    b.find(Locator::Id("drain-ok"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_page(
        &b,
        "secondary drained",
        Duration::from_secs(3),
        &state_is(&k2, "drained"),
    )
    .await;
    let r = o.cli(&["targets"]).await;
    let text = String::from_utf8_lossy(&r.stdout).into_owned();
    let line = text
        .lines()
        .find(|l| l.contains(&k2))
        .unwrap_or_default()
        .to_owned();
    assert!(
        line.contains("drained until")
            && line.contains("by status page")
            && line.contains("browser test"),
        "{text}"
    );
    let state = o.state_file();
    let until = state["drains"][&k2]["until"].as_str().unwrap().to_owned();
    let left = humantime::parse_rfc3339(&until)
        .unwrap()
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default();
    assert!(
        left > Duration::from_secs(45) && left <= Duration::from_secs(60),
        "until {until}"
    );

    // Screenshots (desktop, then phone width), before the reload.
    std::fs::write(artifact("ui-screenshot.png"), b.screenshot().await.unwrap()).unwrap();
    b.set_window_size(390, 844).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    std::fs::write(
        artifact("ui-screenshot-phone.png"),
        b.screenshot().await.unwrap(),
    )
    .unwrap();
    let overflow = js(
        &b,
        "const e = document.documentElement; return e.scrollWidth <= e.clientWidth",
    )
    .await;
    assert_eq!(overflow, true, "the page is wider than a phone");
    b.set_window_size(1280, 900).await.unwrap();

    // Reload: still signed in within the tab.
    b.refresh().await.unwrap();
    wait_page(
        &b,
        "signed in after a reload",
        Duration::from_secs(4),
        &state_is(&k2, "drained"),
    )
    .await;
    assert_eq!(
        js(&b, "return document.getElementById('signin').hidden").await,
        true
    );

    // No console errors (CSP violations, failed loads, script errors) the whole time. The
    // test's own marker proves the log is read at all.
    js(&b, "console.error('sipdns-test-marker'); return true").await;
    let log = console(port, &session_id);
    assert!(
        log.iter().any(|e| e["message"]
            .as_str()
            .is_some_and(|m| m.contains("sipdns-test-marker"))),
        "the browser log is not collected: {log:?}"
    );
    let errors: Vec<&Value> = log
        .iter()
        .filter(|e| e["level"] == "SEVERE" || e["level"] == "WARNING")
        .filter(|e| {
            !e["message"]
                .as_str()
                .is_some_and(|m| m.contains("sipdns-test-marker"))
        })
        .collect();
    assert!(errors.is_empty(), "console: {errors:?}");
    b.close().await.unwrap();

    // Dark mode: a second session that prefers a dark colour scheme.
    let dark = session(
        port,
        &bdir.path().join("profile-dark"),
        &["--blink-settings=preferredColorScheme=0"],
    )
    .await;
    dark.goto(&url).await.unwrap();
    dark.find(Locator::Id("token"))
        .await
        .unwrap()
        .send_keys(API_TOKEN)
        .await
        .unwrap();
    dark.find(Locator::Css("#signin button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_page(
        &dark,
        "dashboard in dark mode",
        Duration::from_secs(5),
        &state_is(&k2, "drained"),
    )
    .await;
    assert_eq!(
        js(
            &dark,
            "return matchMedia('(prefers-color-scheme: dark)').matches"
        )
        .await,
        true
    );
    let bg = js(
        &dark,
        "return getComputedStyle(document.body).backgroundColor",
    )
    .await;
    assert_eq!(bg, "rgb(17, 20, 24)", "dark background");
    std::fs::write(
        artifact("ui-screenshot-dark.png"),
        dark.screenshot().await.unwrap(),
    )
    .unwrap();
    dark.close().await.unwrap();
    driver.stop();
    o.secondary.stop();
}
