//! Headless Chromium for page tests, driven through chromedriver with fantoccini.
//!
//! Each [`Browser`] starts its own chromedriver on a free port, in its own process group
//! with its own profile folder, and kills the whole group on drop, so a failing test leaves
//! no chromium behind. A global semaphore lets at most two browsers run at once (CI has two
//! cores). Screenshots go to `<target dir>/screenshots/<name>.png`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder};
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::sync::{Semaphore, SemaphorePermit};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

/// Phones first: the size every guest page is checked and photographed at.
pub const PHONE: (u32, u32) = (390, 844);

static BROWSERS: Semaphore = Semaphore::const_new(2);

/// One headless chromium session.
pub struct Browser {
    pub client: Client,
    driver: Child,
    _profile: TempDir,
    _permit: SemaphorePermit<'static>,
}

impl Browser {
    /// A browser whose viewport is `width`×`height` CSS pixels.
    pub async fn start((width, height): (u32, u32)) -> Browser {
        for binary in [CHROMEDRIVER, CHROMIUM] {
            assert!(
                std::path::Path::new(binary).exists(),
                "browser tests need {binary}: run `apt-get install chromium chromium-driver`"
            );
        }
        let permit = BROWSERS
            .acquire()
            .await
            .expect("the browser semaphore is never closed");
        let port = free_port();
        let driver = spawn_driver(port);
        let profile = tempfile::tempdir().expect("a profile folder for chromium");
        let mut browser_guard = DriverGuard(Some(driver));
        wait_for_driver(port).await;
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                // Headless windows are at least 500 px wide; device metrics give the page
                // exactly the viewport asked for (and screenshots that size).
                "mobileEmulation": {
                    "deviceMetrics": { "width": width, "height": height, "pixelRatio": 1.0 },
                },
                "args": [
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-background-networking",
                    "--disable-dev-shm-usage",
                    "--hide-scrollbars",
                    "--force-device-scale-factor=1",
                    format!("--window-size={width},{height}"),
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            },
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!("a JSON object literal")
        };
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("chromedriver opens a chromium session");
        Browser {
            client,
            driver: browser_guard.0.take().expect("the driver is still owned"),
            _profile: profile,
            _permit: permit,
        }
    }

    /// Opens `url` (absolute).
    pub async fn open(&self, url: &str) {
        self.client.goto(url).await.expect("the page opens");
    }

    /// The text of the whole page as a person would read it (empty while a navigation
    /// replaces the document).
    pub async fn text(&self) -> String {
        self.client
            .execute(
                "return document.body ? document.body.innerText : '';",
                vec![],
            )
            .await
            .ok()
            .and_then(|text| text.as_str().map(str::to_string))
            .unwrap_or_default()
    }

    /// Waits (up to `seconds`) until the page's text contains `needle`, reloading when the
    /// page asks to via meta refresh on its own. Panics with the page text if it never does.
    pub async fn wait_for_text(&self, needle: &str, seconds: u64) -> String {
        let deadline = Instant::now() + Duration::from_secs(seconds);
        loop {
            let text = self.text().await;
            if text.contains(needle) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "the page never showed {needle:?}; it shows:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Writes the viewport as `<target dir>/screenshots/<name>.png`.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.expect("a screenshot");
        let folder = screenshots_folder();
        std::fs::create_dir_all(&folder).expect("create the screenshots folder");
        let path = folder.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write the screenshot");
        path
    }

    /// Every form field has a label (a `<label for>`, a wrapping label or an aria label),
    /// every image an alt text (`<img alt>`, or an `<svg role=img>` with a label), and the
    /// page has a language and a title.
    pub async fn assert_accessible(&self) {
        let problems = self
            .client
            .execute(ACCESSIBILITY_CHECK, vec![])
            .await
            .expect("run the accessibility check");
        let problems: Vec<String> = serde_json::from_value(problems).unwrap_or_default();
        let url = self.client.current_url().await.map(|url| url.to_string());
        assert!(
            problems.is_empty(),
            "accessibility problems on {url:?}:\n{}",
            problems.join("\n")
        );
    }

    /// Ends the session (chromium quits cleanly); dropping also kills the driver.
    pub async fn close(self) {
        let Browser { client, .. } = &self;
        let _ = client.clone().close().await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        kill_group(&mut self.driver);
    }
}

/// Kills the driver if start-up fails before a `Browser` owns it.
struct DriverGuard(Option<Child>);

impl Drop for DriverGuard {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            kill_group(child);
        }
    }
}

fn spawn_driver(port: u16) -> Child {
    use std::os::unix::process::CommandExt;
    Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Its own process group: chromium and its helpers die with it.
        .process_group(0)
        .spawn()
        .unwrap_or_else(|error| {
            panic!("could not start {CHROMEDRIVER} ({error}); `apt-get install chromium chromium-driver`")
        })
}

fn kill_group(child: &mut Child) {
    let group = format!("-{}", child.id());
    let _ = Command::new("kill")
        .args(["-KILL", "--", &group])
        .stderr(Stdio::null())
        .status();
    let _ = child.kill();
    let _ = child.wait();
}

async fn wait_for_driver(port: u16) {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let ready = client
            .get(format!("http://127.0.0.1:{port}/status"))
            .send()
            .await
            .is_ok_and(|response| response.status().is_success());
        if ready {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("chromedriver did not answer on port {port} within 20 s");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port")
}

/// `<target dir>/screenshots`, next to cargo's per-test scratch folder.
pub fn screenshots_folder() -> PathBuf {
    let scratch = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    scratch
        .parent()
        .map(|target| target.join("screenshots"))
        .unwrap_or_else(|| scratch.join("screenshots"))
}

const ACCESSIBILITY_CHECK: &str = r#"
const problems = [];
const describe = (el) => el.outerHTML.slice(0, 120);
if (!document.documentElement.lang) problems.push("<html> has no lang");
if (!document.title.trim()) problems.push("the page has no <title>");
for (const field of document.querySelectorAll("input, select, textarea")) {
  const type = (field.getAttribute("type") || "").toLowerCase();
  if (["hidden", "submit", "button", "reset", "image"].includes(type)) continue;
  const labelled = (field.labels && [...field.labels].some((l) => l.textContent.trim()))
    || (field.getAttribute("aria-label") || "").trim()
    || field.getAttribute("aria-labelledby");
  if (!labelled) problems.push("field without a label: " + describe(field));
}
for (const img of document.querySelectorAll("img")) {
  if (!img.hasAttribute("alt")) problems.push("image without alt: " + describe(img));
}
for (const svg of document.querySelectorAll("svg")) {
  if (svg.closest("[aria-hidden=true]")) continue;
  const named = (svg.getAttribute("aria-label") || "").trim()
    || svg.getAttribute("aria-labelledby")
    || (svg.querySelector("title") && svg.querySelector("title").textContent.trim());
  if (!named) problems.push("svg image without a text alternative: " + describe(svg));
}
for (const button of document.querySelectorAll("button, a")) {
  const name = button.textContent.trim() || (button.getAttribute("aria-label") || "").trim();
  if (!name) problems.push("button or link without a name: " + describe(button));
}
return problems;
"#;

mod smoke {
    use super::*;
    use crate::helpers::{spawn_app, Backend};

    /// The harness works end to end: a page renders in chromium at phone size, is
    /// photographed, and passes the accessibility check; the style sheet applies.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_page_renders_in_headless_chromium_at_phone_size() {
        let app = spawn_app(Backend::Sqlite).await;
        let browser = Browser::start(PHONE).await;
        browser
            .open(&format!("{}/pay/no-such-door", app.address))
            .await;
        let text = browser.wait_for_text("Not found", 5).await;
        assert!(text.contains("There is no door"), "{text}");
        let viewport = browser
            .client
            .execute("return [window.innerWidth, window.innerHeight];", vec![])
            .await
            .unwrap();
        assert_eq!(viewport, json!([PHONE.0, PHONE.1]));
        let header_colour = browser
            .client
            .execute(
                "return getComputedStyle(document.querySelector('header.brand')).backgroundColor;",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(header_colour, json!("rgb(31, 95, 191)"), "app.css applied");
        browser.assert_accessible().await;
        let shot = browser.screenshot("smoke_not_found").await;
        let png = std::fs::read(&shot).unwrap();
        // PNG header: width and height are big-endian at bytes 16..24.
        let size = |at: usize| u32::from_be_bytes(png[at..at + 4].try_into().unwrap());
        assert_eq!((size(16), size(20)), PHONE, "the screenshot is phone-sized");
        browser.close().await;
        app.stop().await;
    }
}
