//! A real headless Chromium for the dashboard tests, driven over WebDriver (Debian's `chromium`
//! and `chromium-driver`, which `scripts/test.sh` installs). Absent browser: the tests print why
//! and pass, so a plain clone still passes; CI has both. Each test saves a screenshot of every
//! page it looks at under `target/screenshots/<test>/`, and checks pages with axe-core (WCAG 2.1
//! A and AA rules; vendored in `tests/fixtures/`).

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use thirtyfour::prelude::*;

const CHROMIUM: &str = "/usr/bin/chromium";
const DRIVER: &str = "/usr/bin/chromedriver";
pub const AXE_SHA256: &str = "29348999450cdf2849a8e70b7912fc2da85a849da39c0d0d5394f51d4a9ed95c";

pub struct Browser {
    pub driver: WebDriver,
    chromedriver: Child,
    pub base: String,
    shots: PathBuf,
    count: std::cell::Cell<u32>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Browser {
    /// A browser on `base` (the server's URL), or `None` (printed) without Chromium.
    pub async fn start(base: &str, test: &str) -> Option<Browser> {
        for bin in [CHROMIUM, DRIVER] {
            if !std::path::Path::new(bin).exists() {
                assert!(
                    std::env::var_os("BERTH_REQUIRE_BROWSER").is_none(),
                    "BERTH_REQUIRE_BROWSER is set but {bin} is not installed"
                );
                eprintln!(
                    "SKIP {test}: {bin} is not installed (scripts/test.sh installs chromium and chromium-driver)"
                );
                return None;
            }
        }
        let port = free_port();
        let chromedriver = std::process::Command::new(DRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let mut caps = DesiredCapabilities::chrome();
        caps.set_binary(CHROMIUM).unwrap();
        for arg in [
            "--headless=new",
            "--no-sandbox",
            "--disable-dev-shm-usage",
            "--disable-gpu",
            "--window-size=1280,900",
            "--lang=en-US",
        ] {
            caps.add_arg(arg).unwrap();
        }
        let started = Instant::now();
        let driver = loop {
            match WebDriver::new(format!("http://127.0.0.1:{port}"), caps.clone()).await {
                Ok(d) => break d,
                Err(e) if started.elapsed() < Duration::from_secs(20) => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("no browser session: {e}"),
            }
        };
        let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../target/screenshots")
            .join(test);
        let _ = std::fs::remove_dir_all(&shots);
        std::fs::create_dir_all(&shots).unwrap();
        Some(Browser {
            driver,
            chromedriver,
            base: base.trim_end_matches('/').to_owned(),
            shots,
            count: std::cell::Cell::new(0),
        })
    }

    pub async fn quit(mut self) {
        let _ = self.driver.clone().quit().await;
        let _ = self.chromedriver.kill();
        let _ = self.chromedriver.wait();
    }

    pub async fn goto(&self, path: &str) {
        self.driver.goto(format!("{}{path}", self.base)).await.unwrap();
    }

    pub async fn path(&self) -> String {
        let url = self.driver.current_url().await.unwrap();
        let mut p = url.path().to_owned();
        if let Some(q) = url.query() {
            p.push('?');
            p.push_str(q);
        }
        p
    }

    pub async fn sign_in(&self, token: &str) {
        self.goto("/ui/sign-in").await;
        self.fill("#token", token).await;
        self.click("form[action='/ui/sign-in'] button").await;
        self.wait_for("header nav").await;
    }

    pub async fn sign_out(&self) {
        self.click("form[action='/ui/sign-out'] button").await;
        self.wait_for("#token").await;
    }

    pub async fn find(&self, css: &str) -> WebElement {
        self.driver
            .find(By::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css}: {e}"))
    }

    pub async fn all(&self, css: &str) -> Vec<WebElement> {
        self.driver.find_all(By::Css(css)).await.unwrap()
    }

    /// The text of the first element matching `css`, read in one step in the page (a live region
    /// may be swapped between a find and a read).
    pub async fn text(&self, css: &str) -> String {
        match self.eval(css, "e.innerText").await {
            Some(t) => t,
            None => panic!("no {css} at {}", self.path().await),
        }
    }

    /// An attribute of the first element matching `css`, read in one step.
    pub async fn attr(&self, css: &str, name: &str) -> Option<String> {
        self.eval(css, &format!("e.getAttribute({})", serde_json::json!(name)))
            .await
    }

    async fn eval(&self, css: &str, expr: &str) -> Option<String> {
        let script = format!(
            "const e = document.querySelector({}); return e ? {expr} : null;",
            serde_json::json!(css)
        );
        self.driver.execute(script, vec![]).await.unwrap().convert().unwrap()
    }

    pub async fn fill(&self, css: &str, value: &str) {
        let e = self.find(css).await;
        e.clear().await.unwrap();
        e.send_keys(value).await.unwrap();
    }

    pub async fn select(&self, css: &str, value: &str) {
        let e = self.find(&format!("{css} option[value='{value}']")).await;
        e.click().await.unwrap();
    }

    pub async fn click(&self, css: &str) {
        self.find(css).await.click().await.unwrap();
    }

    /// The first element matching `css`, waiting up to 30 s for it.
    pub async fn wait_for(&self, css: &str) -> WebElement {
        let started = Instant::now();
        loop {
            if let Ok(e) = self.driver.find(By::Css(css)).await {
                return e;
            }
            if started.elapsed() > Duration::from_secs(30) {
                self.shot("timeout").await;
                panic!("{css} did not appear at {}", self.path().await);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Saves a screenshot of the whole page as `NN-name.png`.
    pub async fn shot(&self, name: &str) -> PathBuf {
        let n = self.count.get() + 1;
        self.count.set(n);
        let h: u32 = self
            .driver
            .execute("return document.documentElement.scrollHeight", vec![])
            .await
            .ok()
            .and_then(|r| r.convert().ok())
            .unwrap_or(900);
        let rect = self.driver.get_window_rect().await.unwrap();
        let _ = self
            .driver
            .set_window_rect(0, 0, rect.width as u32, (h + 120).clamp(600, 4000))
            .await;
        let path = self.shots.join(format!("{n:02}-{name}.png"));
        self.driver.screenshot(&path).await.unwrap();
        let _ = self
            .driver
            .set_window_rect(0, 0, rect.width as u32, rect.height as u32)
            .await;
        path
    }

    pub async fn set_width(&self, width: u32) {
        self.driver.set_window_rect(0, 0, width, 900).await.unwrap();
    }

    /// Runs axe-core on the page: no WCAG 2.1 A or AA violation.
    pub async fn check_accessibility(&self, what: &str) {
        let violations = self.accessibility_violations().await;
        assert!(
            violations.is_empty(),
            "{what}: accessibility violations:\n{}",
            violations.join("\n")
        );
    }

    /// What axe-core finds wrong with the page (WCAG 2.1 A and AA rules).
    pub async fn accessibility_violations(&self) -> Vec<String> {
        let axe = include_str!("../fixtures/axe.min.js");
        self.driver.execute(axe, vec![]).await.unwrap();
        let ret = self
            .driver
            .execute_async(
                "const done = arguments[arguments.length - 1];
                 axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']}})
                    .then(r => done(r.violations.map(v => v.id + ': ' + v.help + ' at ' + v.nodes.map(n => n.target.join(' ')).join(', '))))
                    .catch(e => done(['axe failed: ' + e]));",
                vec![],
            )
            .await
            .unwrap();
        ret.convert().unwrap()
    }
}

#[test]
fn axe_is_the_published_file() {
    use sha2::Digest as _;
    let data = include_bytes!("../fixtures/axe.min.js");
    assert_eq!(
        hex::encode(sha2::Sha256::digest(data)),
        AXE_SHA256,
        "tests/fixtures/axe.min.js is axe-core 4.14.1 as published on npm"
    );
}
