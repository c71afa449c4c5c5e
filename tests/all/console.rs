//! The operator console (`GET /` on the admin listener), driven in the
//! installed Chromium through chromedriver (both from `scripts/setup
//! --tests`), as an operator would use it: sign in, see the services,
//! deploy by upload, roll back, watch a breaker open, replay and discard a
//! dead letter. A screenshot of each page is written to
//! `target/console-screenshots/` for review.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;

use crate::support::{
    Server, eventually, faulty_payment, fresh_dir, repo_root, test_components, text,
};

/// How long the page gets to show a change: it polls every 2 s.
const SHOWN: Duration = Duration::from_secs(15);

/// The built-ins, a component that traps on demand (its breaker opens after
/// two failures) and one whose poison events are dead-lettered at once.
fn config() -> String {
    let mut config = format!(
        r#"
        [components.trap]
        path = "{trap}"
        breaker = {{ consecutive_failures = 2, open_ms = 600000 }}

        [components.busprobe]
        path = "{probe}"

        [bus]
        max_attempts = 1
        "#,
        trap = test_components().join("trap.wasm").display(),
        probe = test_components().join("busprobe.wasm").display(),
    );
    for (prefix, component) in [
        ("/users", "user"),
        ("/orders", "order"),
        ("/payments", "payment"),
        ("/trap", "trap"),
        ("/probe", "busprobe"),
    ] {
        config += &format!("[[routes]]\nprefix = \"{prefix}\"\ncomponent = \"{component}\"\n");
    }
    config
}

/// chromedriver on a loopback port of its choosing, and a headless Chromium session.
struct Browser {
    client: Client,
    driver: Child,
}

impl Browser {
    async fn start() -> Browser {
        // A process group of its own: Chromium and its helpers are
        // chromedriver's children, and are stopped with it (see Drop).
        let mut driver = Command::new("chromedriver")
            .arg("--port=0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("chromedriver is not installed: run scripts/setup --tests");
        // Port 0: chromedriver binds a free port itself and says which. A
        // port found free here and released for it could be taken in
        // between by a server of a test running alongside.
        let (said, heard) = std::sync::mpsc::channel();
        let stdout = driver.stdout.take().unwrap();
        std::thread::spawn(move || {
            // Read to the end, so that a full pipe never blocks chromedriver.
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let port = line.split_once("started successfully on port ");
                if let Some(port) =
                    port.and_then(|(_, p)| p.trim_end_matches('.').parse::<u16>().ok())
                {
                    let _ = said.send(port);
                }
            }
        });
        let port: u16 = match tokio::task::spawn_blocking(move || heard.recv_timeout(SHOWN)).await {
            Ok(Ok(port)) => port,
            _ => {
                stop(&mut driver);
                panic!("chromedriver did not say which port it listens on within {SHOWN:?}");
            }
        };
        let mut options = json!({
            "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--disable-gpu", "--window-size=1280,1000"],
        });
        if Path::new("/usr/bin/chromium").exists() {
            options["binary"] = json!("/usr/bin/chromium");
        }
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("goog:chromeOptions".into(), options);
        let url = format!("http://127.0.0.1:{port}");
        let client = eventually("chromedriver to start a session", SHOWN, || {
            let (capabilities, url) = (capabilities.clone(), url.clone());
            async move {
                let mut builder = ClientBuilder::new(HttpConnector::new());
                builder.capabilities(capabilities);
                builder.connect(&url).await.ok()
            }
        })
        .await;
        Browser { client, driver }
    }

    /// The text of the first element `css` matches, once `shown` accepts it.
    async fn text_when(&self, css: &str, shown: impl Fn(&str) -> bool) -> String {
        eventually(&format!("{css} to show what was expected"), SHOWN, || async {
            let text = self.client.find(Locator::Css(css)).await.ok()?.text().await.ok()?;
            shown(&text).then_some(text)
        })
        .await
    }

    async fn click(&self, css: &str) {
        let element = self.client.wait().at_most(SHOWN).for_element(Locator::Css(css)).await;
        element.unwrap_or_else(|e| panic!("{css}: {e}")).click().await.unwrap();
    }

    async fn type_into(&self, css: &str, text: &str) {
        let element = self.client.wait().at_most(SHOWN).for_element(Locator::Css(css)).await;
        element.unwrap_or_else(|e| panic!("{css}: {e}")).send_keys(text).await.unwrap();
    }

    async fn script(&self, script: &str) -> serde_json::Value {
        self.client.execute(script, vec![]).await.unwrap()
    }

    /// What `body`, the body of an async function, returns. The console's
    /// functions are its modules' exports, not globals: `body` imports
    /// what it calls (`await import('/console/metrics.js')`).
    async fn script_async(&self, body: &str) -> serde_json::Value {
        let script = format!(
            "const done = arguments[arguments.length - 1];\
             (async () => {{ {body} }})().then(done, (error) => done(`failed: ${{error}}`));"
        );
        self.client.execute_async(&script, vec![]).await.unwrap()
    }

    /// Wait until the page has redrawn `n` times since it showed `seen` as
    /// its "Updated" time, which each poll sets once it has redrawn the
    /// page. The time is to the second and polls are 2 s apart, so each
    /// change is at least one redraw.
    async fn redraws_since(&self, seen: &str, n: usize) {
        let mut seen = seen.to_string();
        for _ in 0..n {
            let next = self.text_when("#updated", |t| t.starts_with("Updated ") && t != seen).await;
            seen = next;
        }
    }

    /// A PNG of the page as it stands, under `target/console-screenshots/`.
    async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.unwrap();
        std::fs::create_dir_all(screenshots()).unwrap();
        std::fs::write(screenshots().join(format!("{name}.png")), png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        stop(&mut self.driver);
    }
}

/// Stop chromedriver's whole group, so no headless Chromium outlives the
/// test (the session is not closed when the test panics halfway).
fn stop(driver: &mut Child) {
    let group = format!("-{}", driver.id());
    let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
    let _ = driver.wait();
}

fn screenshots() -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().unwrap_or(tmp).join("console-screenshots")
}

#[tokio::test]
async fn an_operator_deploys_rolls_back_and_sees_breakers_and_dead_letters() {
    let server = Server::start_with(Some(&config()), fresh_dir()).await;
    let token = std::fs::read_to_string(server.data_dir().join("admin.token")).unwrap();
    let browser = Browser::start().await;
    browser.client.goto(&format!("{}/", server.admin_base)).await.unwrap();

    // A wrong token is refused in words; the right one, submitted from the
    // keyboard, signs in.
    browser.type_into("#token", "not-the-token\n").await;
    browser.text_when("#sign-in-error", |t| t.contains("refused")).await;
    browser.screenshot("sign-in").await;
    browser.type_into("#token", &format!("{}\n", token.trim())).await;
    for name in ["user", "order", "payment", "trap", "busprobe"] {
        let row = format!("#components tr[data-component={name}] .version");
        browser.text_when(&row, |t| t.starts_with("v1")).await;
    }
    browser.text_when("#components tr[data-component=order]", |t| t.contains("/orders")).await;
    // The page says when it last read the platform.
    browser.text_when("#updated", |t| t.starts_with("Updated ") && t.ends_with(" UTC")).await;
    browser.screenshot("components").await;

    // The page's arithmetic on /metrics, in the page: a component named
    // like an Object property is just a name, p50/p99 are bucket bounds,
    // and a counter that went down (the host restarted) counts from zero.
    let checks = browser
        .script_async(
            "const { trafficOf, parseMetrics, quantile, delta } = await import('/console/metrics.js');\
             const t = trafficOf(parseMetrics(\
               'pitstop_requests_total{component=\"constructor\",route=\"/c\",status=\"503\"} 3'));\
             const buckets = {'0.001': 5, '0.002': 9, '0.004': 10, '+Inf': 10};\
             return [t['constructor'].requests, t['constructor'].errors,\
                     quantile(null, buckets, 0.5), quantile(null, buckets, 0.99),\
                     quantile(null, {'0.001': 0, '+Inf': 4}, 0.5), delta(2, 7), delta(7, 2)];",
        )
        .await;
    assert_eq!(checks, json!([3, 3, 1, 4, null, 2, 5]));
    // A chart: buckets without requests are gaps (two runs, two lines), a
    // lone bucket still shows; the figure says the current value, the scale
    // and the time axis.
    let drawn = browser
        .script_async(
            "const { chart } = await import('/console/chart.js');\
             const f = chart('Rate', [[[1, 2, null, 4, null, null, 3], 'rate']], String, '30 s ago');\
             return [f.querySelectorAll('polyline').length, f.querySelector('figcaption').textContent,\
                     f.querySelector('.chart-axis').textContent,\
                     chart('E', [[[null, null], 'errors']], String, '2 s ago').querySelector('.now').textContent];",
        )
        .await;
    assert_eq!(drawn, json!([3, "Ratenow 3", "30 s ago0 to 4now", "now no requests"]));

    // A new version of payment, by upload: the table shows it serving.
    browser.click("#components tr[data-component=payment] button").await;
    browser.text_when("#detail-title", |t| t.starts_with("payment")).await;
    let upload = faulty_payment().display().to_string();
    browser.type_into("#deploy-file", &upload).await;
    browser.click("#deploy button[type=submit]").await;
    let deployed = browser.text_when("#deploy-result", |t| t.contains("payment version 2")).await;
    assert!(deployed.starts_with("Deployed payment version 2 in "), "{deployed}");
    let version = "#components tr[data-component=payment] .version";
    browser.text_when(version, |t| t.starts_with("v2")).await;
    browser.text_when("#versions tr[data-version='2']", |t| t.contains("active")).await;
    assert_eq!(
        server.admin("GET", "/admin/components/payment/versions", "").await.json()["active"],
        2
    );

    // Something that is not a component: the API's refusal, in words.
    let not_wasm = repo_root().join("Cargo.toml").display().to_string();
    browser.type_into("#deploy-file", &not_wasm).await;
    browser.click("#deploy button[type=submit]").await;
    let refused = browser.text_when("#deploy-result", |t| t.contains("failed")).await;
    assert!(refused.contains("The deploy of payment failed"), "{refused}");
    assert!(refused.contains("refused the request:"), "{refused}");

    // Roll back: version 1 serves again.
    browser.click("#rollback").await;
    browser.text_when("#status", |t| t.contains("rolled back")).await;
    browser.text_when(version, |t| t.starts_with("v1")).await;
    assert_eq!(
        server.admin("GET", "/admin/components/payment/versions", "").await.json()["active"],
        1
    );

    // Forward again, and back, from the version history's own buttons.
    browser.click("#versions tr[data-version='2'] button.activate").await;
    browser.text_when("#status", |t| t.contains("payment version 2 is active")).await;
    browser.text_when(version, |t| t.starts_with("v2")).await;
    browser.click("#versions tr[data-version='1'] button.activate").await;
    browser.text_when("#status", |t| t.contains("payment version 1 is active")).await;
    browser.text_when(version, |t| t.starts_with("v1")).await;

    // A component that traps until its breaker opens: the row says so, and
    // the banner names the failing readiness check.
    for _ in 0..3 {
        let _ = server.get("/trap/panic").await;
    }
    browser.text_when("#components tr[data-component=trap] .state", |t| t == "OPEN").await;
    let banner = browser.text_when("#banner", |t| t.contains("component:trap")).await;
    assert!(banner.contains("circuit open"), "{banner}");
    browser.script("window.scrollTo(0, 0)").await;
    browser.screenshot("components-breaker-open").await;

    browser.click("a[href='#traffic']").await;
    let card = "#traffic section[data-component=trap]";
    browser.text_when(card, |t| t.contains("OPEN") && t.contains("req/s")).await;
    // Every answer of the trap was a 5xx (two traps, then the open circuit).
    browser.text_when(&format!("{card} .error-rate"), |t| t == "100.0%").await;
    let errors = format!("{card} figure:nth-of-type(2) figcaption");
    browser.text_when(&errors, |t| t.ends_with("now 100.0%")).await;
    browser
        .text_when("#traffic section[data-component=user] .rate", |t| t.ends_with("req/s"))
        .await;
    browser.screenshot("traffic").await;

    browser.click("a[href='#health']").await;
    let check = "#checks tr[data-check='component:trap']";
    browser.text_when(check, |t| t.contains("failing: circuit open")).await;
    browser.text_when("#health-summary", |t| t.contains("Not ready")).await;
    browser.screenshot("health").await;

    // A dead letter whose payload is markup: shown as text, never run.
    let markup = r#"<img src=x onerror="document.title='pwned'">"#;
    let published = server.send("POST", "/probe/publish/probe.poison", markup).await;
    assert_eq!(published.status, 200);
    browser.click("a[href='#events']").await;
    let preview = browser.text_when("#dead-letters .payload", |t| !t.is_empty()).await;
    assert_eq!(preview, markup, "the payload as text");
    assert_ne!(browser.script("return document.title").await, json!("pwned"));
    assert_eq!(
        browser.script("return document.querySelectorAll('#dead-letters img').length").await,
        json!(0)
    );
    let dead = "#subscribers tr[data-subscriber=busprobe] .dead";
    browser.text_when(dead, |t| t == "1").await;
    browser.screenshot("events").await;

    // Replay from the keyboard: the focus stays on the button across polls
    // (which rebuild the table), and Enter presses it. The button focused
    // is kept, and the time read in the same script, so that the redraws
    // waited for are after the focus, and the focused button afterwards
    // is shown to be a new one: a redraw happened and the focus followed.
    let seen = browser
        .script(
            "const button = document.querySelector('#dead-letters button.replay');\
             button.focus();\
             window.focusedBeforeRedraws = button;\
             return document.getElementById('updated').textContent;",
        )
        .await;
    browser.redraws_since(seen.as_str().unwrap(), 2).await;
    let focused = browser
        .script(
            "const before = window.focusedBeforeRedraws;\
             return [document.activeElement.getAttribute('data-role'),\
                     document.activeElement !== before, before.isConnected];",
        )
        .await;
    assert_eq!(focused, json!(["replay", true, false]), "the focus moved to the redrawn button");
    let replay = browser.client.find(Locator::Css("#dead-letters button.replay")).await.unwrap();
    replay.send_keys("\u{E007}").await.unwrap(); // Enter
    browser.text_when("#status", |t| t.contains("Replayed")).await;
    browser.text_when(dead, |t| t == "2").await;
    browser.text_when("#dead-letters .payload", |t| t == markup).await;
    // Discard: gone.
    browser.click("#dead-letters button.discard").await;
    browser.text_when("#dead-letters tbody", |t| t.contains("No dead letters")).await;
    let letters = server.admin("GET", "/admin/dead-letters", "").await.json();
    assert_eq!(letters["dead_letters"], json!([]));

    // Undeploy takes a confirmation, then the component is gone.
    browser.click("a[href='#components']").await;
    browser.click("#components tr[data-component=trap] button").await;
    browser.click("#undeploy").await;
    browser.click("#undeploy-yes").await;
    browser.text_when("#status", |t| t.contains("trap was undeployed")).await;
    let rows = "#components tbody";
    browser.text_when(rows, |t| !t.contains("trap") && t.contains("payment")).await;
    // It is listed as undeployed, and served again from its versions.
    browser.text_when("#undeployed tr[data-component=trap]", |t| t.contains("v1")).await;
    browser.click("#undeployed tr[data-component=trap] button").await;
    browser.text_when("#detail-title", |t| t == "trap: versions").await;
    let hidden = "return ['rollback', 'undeploy'].map((id) => document.getElementById(id).hidden)";
    assert_eq!(browser.script(hidden).await, json!([true, true]), "only a version can be served");
    browser.click("#versions tr[data-version='1'] button.activate").await;
    browser.text_when("#status", |t| t.contains("trap version 1 is active")).await;
    browser.text_when(rows, |t| t.contains("trap")).await;
    let gone = "return document.getElementById('undeployed-section').hidden";
    assert_eq!(browser.script(gone).await, json!(true), "nothing is undeployed any more");
    let listed = server.admin("GET", "/admin/components?state=undeployed", "").await;
    assert_eq!(listed.json(), json!([]));
    let bogus = server.admin("GET", "/admin/components?state=gone", "").await;
    assert_eq!(bogus.status, 400);

    // At a phone's width nothing runs off the side, not even inside the
    // tables' scroll boxes: each row is a block of "label: value" lines.
    browser.client.set_window_size(380, 900).await.unwrap();
    let overflow = "return Math.max(document.documentElement.scrollWidth - \
                    document.documentElement.clientWidth, ...[...document.querySelectorAll('.scroll')]\
                    .filter((box) => box.offsetParent !== null)\
                    .map((box) => box.scrollWidth - box.clientWidth))";
    for page in ["components", "events", "health"] {
        browser.click(&format!("a[href='#{page}']")).await;
        let wider = browser.script(overflow).await;
        assert!(wider.as_i64().unwrap() <= 0, "{page} is wider than the window by {wider}");
    }
    browser.click("a[href='#components']").await;
    browser.screenshot("components-narrow").await;

    // The token lives in this tab's session storage only: not in the URL,
    // a cookie or storage that outlives the tab.
    let url = browser.client.current_url().await.unwrap();
    assert!(!url.as_str().contains(token.trim()), "{url}");
    let kept = browser
        .script("return [document.cookie, localStorage.length, sessionStorage.length]")
        .await;
    assert_eq!(kept, json!(["", 0, 1]));
    browser.click("#sign-out").await;
    browser.text_when("#sign-in-error", |t| t.contains("Signed out")).await;
    assert_eq!(browser.script("return sessionStorage.length").await, json!(0));
    let updated = "return document.getElementById('updated').hidden";
    assert_eq!(browser.script(updated).await, json!(true), "nothing read is shown signed out");
}

/// The page and its assets are served without a token, with a policy that
/// runs only the console's own scripts; the API behind it still needs one.
#[tokio::test]
async fn the_console_is_served_with_a_strict_policy_and_the_api_stays_closed() {
    let server = Server::start().await;
    let mut assets = vec![
        ("/".to_string(), "text/html"),
        ("/console/console.css".to_string(), "text/css"),
        ("/console/console.js".to_string(), "text/javascript"),
    ];
    let mut served = 0;
    while let Some((path, kind)) = assets.get(served).cloned() {
        let answer = server.admin_with("GET", &path, "", None).await;
        assert_eq!(answer.status, 200, "{path}");
        // A browser runs a module served with any other type not at all.
        assert!(answer.headers["content-type"].to_str().unwrap().starts_with(kind), "{path}");
        let policy = answer.headers["content-security-policy"].to_str().unwrap();
        assert!(policy.contains("script-src 'self'"), "{policy}");
        assert!(!policy.contains("unsafe"), "{policy}");
        assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
        // The modules the entry imports, and theirs, as the browser loads them.
        for import in text(&answer.body).split("from './").skip(1) {
            let module = format!("/console/{}", &import[..import.find('\'').unwrap()]);
            if !assets.iter().any(|(known, _)| *known == module) {
                assets.push((module, "text/javascript"));
            }
        }
        served += 1;
    }
    assert!(assets.len() > 4, "the modules the entry imports were found: {assets:?}");
    assert_eq!(server.admin_with("GET", "/admin/ready", "", None).await.status, 401);
    let ready = server.admin("GET", "/admin/ready", "").await;
    assert_eq!(ready.status, 200);
    assert_eq!(ready.json()["checks"]["component:user"], "ok");
    assert_eq!(server.admin("POST", "/admin/ready", "").await.status, 405);
    assert_eq!(server.admin_with("GET", "/console/nope.js", "", None).await.status, 401);
}
