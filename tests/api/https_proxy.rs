//! Latchkey behind a real Caddy, as `deploy/` runs it: Caddy (Debian's `caddy`, installed by
//! `scripts/test`) serves the shipped site block `deploy/latchkey.caddy` over HTTPS with a
//! certificate from its internal CA and forwards to the test server. Each Caddy has its
//! own ports, storage and config folders under a temporary directory and no admin
//! endpoint, so tests run in parallel; the client trusts that Caddy's root certificate
//! only. Clients connect from their own loopback addresses (127.0.0.2, 127.0.0.3, …), which
//! Caddy writes into `X-Forwarded-For`; the server trusts only Caddy's address
//! (`LATCHKEY_TRUSTED_PROXIES=127.0.0.1/32`).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use latchkey::http::auth::Role;
use latchkey::integrations::stripe::signature;
use latchkey::net_policy::{parse_cidrs, TrustedProxies};
use latchkey::sim::stripe::{DeliveryMode, StripeSimConfig, StripeSimHandle};
use latchkey::sim::ttlock::{TtlockSimConfig, TtlockSimHandle};
use latchkey::startup::BuildOptions;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use reqwest::StatusCode;
use secrecy::SecretString;
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::net::TcpListener;

use crate::accounts_support::{enrolled_user, fresh_code, Agent, PASSWORD};
use crate::helpers::ADMIN_TOKEN;
use crate::helpers::{eventually, spawn_app_with_settings, Backend, TestApp, TestDatabase};
use crate::on_both_backends;
use crate::sim_helpers::GATEWAY_LOCK;
use crate::stripe_support::{API_KEY, SECRET};

/// The site block every deployment uses (imported by `deploy/Caddyfile`).
fn site_block() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/latchkey.caddy")
}

/// Two ports nobody listens on now. The listeners are dropped just before Caddy binds
/// them; another test taking one in between would show as Caddy failing to start.
async fn free_ports() -> (u16, u16) {
    let first = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let second = TcpListener::bind("127.0.0.1:0").await.unwrap();
    (
        first.local_addr().unwrap().port(),
        second.local_addr().unwrap().port(),
    )
}

/// A running Caddy in front of one test server; killed when dropped.
struct Caddy {
    /// Killed when the test ends (see `Drop`).
    child: Child,
    dir: TempDir,
    https_port: u16,
    root_certificate: reqwest::Certificate,
}

impl Caddy {
    /// Starts Caddy on `https_port` (and `http_port` for its HTTPS redirect) in front of
    /// `upstream` (host:port), and waits until it answers over HTTPS.
    async fn start(http_port: u16, https_port: u16, upstream: &str) -> Caddy {
        let dir = tempfile::tempdir().unwrap();
        let storage = dir.path().join("storage");
        // The global options are this machine's (test ports, a private CA, no admin API,
        // no HTTP/3 so no UDP port to share); the site is the shipped one.
        let caddyfile = format!(
            "{{\n\tadmin off\n\tstorage file_system {storage}\n\tlocal_certs\n\tskip_install_trust\n\
             \thttp_port {http_port}\n\thttps_port {https_port}\n\tdefault_bind 127.0.0.1\n\
             \tservers {{\n\t\tprotocols h1 h2\n\t}}\n}}\n\nimport {site}\n",
            storage = storage.display(),
            site = site_block().display(),
        );
        let config = dir.path().join("Caddyfile");
        std::fs::write(&config, caddyfile).unwrap();
        let log = std::fs::File::create(dir.path().join("caddy.log")).unwrap();
        let mut child = Command::new(caddy_binary())
            .args(["run", "--adapter", "caddyfile", "--config"])
            .arg(&config)
            .env("LATCHKEY_DOMAIN", "localhost")
            .env("LATCHKEY_UPSTREAM", upstream)
            .env("HOME", dir.path())
            .env("XDG_CONFIG_HOME", dir.path().join("config"))
            .env("XDG_DATA_HOME", dir.path().join("data"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|error| {
                panic!(
                    "could not start {} ({error}); `scripts/test` installs Debian's caddy",
                    caddy_binary()
                )
            });
        let root = storage.join("pki/authorities/local/root.crt");
        let log_path = dir.path().join("caddy.log");
        let written = eventually(200, Duration::from_millis(50), || {
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                panic!("caddy exited ({status}):\n{log}");
            }
            let done =
                std::fs::read(&root).is_ok_and(|pem| pem.ends_with(b"-----END CERTIFICATE-----\n"));
            async move { done }
        })
        .await;
        assert!(
            written,
            "caddy wrote no root certificate at {}",
            root.display()
        );
        let pem = std::fs::read(&root).unwrap();
        let caddy = Caddy {
            child,
            dir,
            https_port,
            root_certificate: reqwest::Certificate::from_pem(&pem).unwrap(),
        };
        let client = caddy.client(loopback(1));
        let health = format!("{}/health", caddy.origin());
        let ready = eventually(200, Duration::from_millis(50), || {
            let request = client.get(&health).send();
            async move {
                request
                    .await
                    .is_ok_and(|response| response.status() == StatusCode::OK)
            }
        })
        .await;
        assert!(
            ready,
            "caddy did not serve /health over HTTPS:\n{}",
            caddy.log()
        );
        caddy
    }

    fn origin(&self) -> String {
        format!("https://localhost:{}", self.https_port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("caddy.log")).unwrap_or_default()
    }

    /// A client that trusts this Caddy's CA only and connects from `from`, a loopback
    /// address of its own (the client address the server should see).
    fn client(&self, from: IpAddr) -> reqwest::Client {
        reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(self.root_certificate.clone())
            .resolve(
                "localhost",
                SocketAddr::from(([127, 0, 0, 1], self.https_port)),
            )
            .local_address(from)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap()
    }
}

impl Drop for Caddy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn caddy_binary() -> String {
    std::env::var("CADDY").unwrap_or_else(|_| "caddy".to_string())
}

/// The server behind the proxy: Stripe and TTLock simulators, `https://localhost:PORT` as
/// its public URL, Caddy as its only trusted proxy, and at most `per_address` checkout
/// starts per client address and minute.
struct World {
    app: TestApp,
    caddy: Caddy,
    stripe: StripeSimHandle,
    _ttlock: TtlockSimHandle,
}

async fn world(backend: Backend, per_address: usize) -> World {
    let stripe = latchkey::sim::stripe::spawn(
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        StripeSimConfig::new(API_KEY, vec![SECRET.to_string()]),
    )
    .unwrap();
    // Webhooks go through Caddy, posted by the test: the simulator delivers nothing.
    stripe.set_delivery(DeliveryMode::Off);
    let ttlock = latchkey::sim::ttlock::spawn(
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        TtlockSimConfig::default(),
    )
    .unwrap();
    let (http_port, https_port) = free_ports().await;
    let stripe_base = stripe.url();
    let ttlock_base = ttlock.base_url().clone();
    let app = spawn_app_with_settings(
        TestDatabase::create(backend).await,
        BuildOptions::default(),
        |settings| {
            settings.public_url = format!("https://localhost:{https_port}").parse().unwrap();
            settings.security.trusted_proxies =
                TrustedProxies::new(parse_cidrs("127.0.0.1/32").unwrap());
            settings.security.checkout_per_address_per_minute = per_address;
            settings.stripe.secret_key = Some(SecretString::from(API_KEY.to_string()));
            settings.stripe.api_base = Some(stripe_base.parse().unwrap());
            settings.stripe.webhook_secrets = vec![SecretString::from(SECRET.to_string())];
            let ttlock = TtlockSimConfig::default();
            settings.ttlock.api_base = Some(ttlock_base);
            settings.ttlock.client_id = Some(ttlock.client_id.clone());
            settings.ttlock.client_secret = Some(ttlock.client_secret.clone());
            settings.ttlock.username = Some(ttlock.username.clone());
            settings.ttlock.password = Some(ttlock.password.clone());
        },
    )
    .await;
    let upstream = app.address.trim_start_matches("http://").to_string();
    let caddy = Caddy::start(http_port, https_port, &upstream).await;
    let door = json!({"uid": GATEWAY_LOCK.to_string(), "name": "Room 12", "location": "Lyon",
                      "time_zone": "Europe/Paris", "price": 1500, "currency": "eur", "access_minutes": 60});
    let registered = caddy
        .client("127.0.0.1".parse().unwrap())
        .post(format!("{}/api/doors", caddy.origin()))
        .bearer_auth(ADMIN_TOKEN)
        .json(&door)
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), StatusCode::CREATED);
    World {
        app,
        caddy,
        stripe,
        _ttlock: ttlock,
    }
}

fn loopback(last: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, last])
}

/// Signs `event` as Stripe would (with the endpoint's secret) and posts it through Caddy.
async fn post_signed_webhook(world: &World, event: &Value) -> StatusCode {
    let body = event.to_string();
    let header = signature::header(body.as_bytes(), &[SECRET], chrono::Utc::now().timestamp());
    world
        .caddy
        .client(loopback(1))
        .post(format!("{}/api/stripe/webhook", world.caddy.origin()))
        .header("stripe-signature", header)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
}

/// Item 5: a guest's door checkout (the pay form), Stripe's signed webhooks and the access
/// page all pass through Caddy over HTTPS; the links given to the guest and to Stripe are
/// the public https ones.
async fn a_guest_pays_for_a_door_and_gets_the_code_through_https(backend: Backend) {
    let world = world(backend, 10).await;
    let guest = world.caddy.client(loopback(2));
    let origin = world.caddy.origin();
    let page = guest
        .get(format!("{origin}/pay/{GATEWAY_LOCK}"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(
        page.headers().contains_key("strict-transport-security"),
        "HSTS behind an https public URL"
    );
    let submitted = guest
        .post(format!("{origin}/pay/{GATEWAY_LOCK}"))
        .form(&[("email", "guest@example.com")])
        .send()
        .await
        .unwrap();
    assert_eq!(submitted.status(), StatusCode::SEE_OTHER);
    let checkout_url = submitted.headers()[LOCATION].to_str().unwrap().to_string();
    let session = checkout_url.rsplit('/').next().unwrap().to_string();
    assert!(session.starts_with("cs_"), "{checkout_url}");

    world.stripe.pay(&session, "4242424242424242").unwrap();
    let events = world.stripe.events();
    assert!(!events.is_empty(), "paying creates Stripe events");
    for event in &events {
        assert_eq!(
            post_signed_webhook(&world, event).await,
            StatusCode::OK,
            "{}",
            event["type"]
        );
    }
    let completed = events
        .iter()
        .find(|event| event["type"] == "checkout.session.completed")
        .expect("checkout.session.completed");
    let success_url = completed["data"]["object"]["success_url"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        success_url.starts_with(&format!("{origin}/access/")),
        "Stripe sends the guest back to the public https URL: {success_url}"
    );
    let token = success_url.rsplit('/').next().unwrap().to_string();
    let status_url = format!("{origin}/api/access/{token}");
    let issued = eventually(300, Duration::from_millis(50), || {
        let request = guest.get(&status_url).send();
        async move {
            let status: Value = request.await.unwrap().json().await.unwrap();
            status["passcode"].is_string()
        }
    })
    .await;
    assert!(issued, "the access page shows a code");
    let status: Value = guest
        .get(&status_url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let passcode = status["passcode"].as_str().unwrap().to_string();
    let html = guest.get(&success_url).send().await.unwrap();
    assert_eq!(html.status(), StatusCode::OK);
    assert!(html.text().await.unwrap().contains(&passcode));

    // The signed deliveries were stored and processed, not just answered. The code can
    // come from the first of them: the others may still be in the inbox's hands.
    let deliveries = || async {
        world
            .caddy
            .client(loopback(1))
            .get(format!("{origin}/api/stripe/deliveries"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    };
    let all_handled = |deliveries: &Value| {
        deliveries["items"].as_array().is_some_and(|items| {
            items.len() == events.len()
                && items
                    .iter()
                    .all(|item| item["status"] == "processed" || item["status"] == "ignored")
        })
    };
    let handled = eventually(400, Duration::from_millis(50), || async {
        all_handled(&deliveries().await)
    })
    .await;
    assert!(handled, "{}", deliveries().await);
    world.app.stop().await;
}

/// A checkout start through Caddy from `from`, with an extra header if given.
async fn start_checkout(world: &World, from: IpAddr, spoofed: Option<&str>) -> StatusCode {
    let mut request = world
        .caddy
        .client(from)
        .post(format!(
            "{}/api/checkout/door/{GATEWAY_LOCK}",
            world.caddy.origin()
        ))
        .json(&json!({"email": "guest@example.com"}));
    if let Some(forwarded_for) = spoofed {
        request = request.header("x-forwarded-for", forwarded_for);
    }
    request.send().await.unwrap().status()
}

/// Item 5: the client address the server uses (here: the per-address checkout limit,
/// one start a minute) is the one Caddy wrote into `X-Forwarded-For`, and what a client
/// writes there itself is dropped.
async fn behind_caddy_the_client_address_is_the_forwarded_one(backend: Backend) {
    let world = world(backend, 1).await;
    assert_eq!(
        start_checkout(&world, loopback(2), None).await,
        StatusCode::CREATED
    );
    assert_eq!(
        start_checkout(&world, loopback(2), None).await,
        StatusCode::TOO_MANY_REQUESTS,
        "127.0.0.2 used its one start"
    );
    assert_eq!(
        start_checkout(&world, loopback(3), Some("127.0.0.2")).await,
        StatusCode::CREATED,
        "127.0.0.3 is not 127.0.0.2 (nor Caddy's 127.0.0.1), whatever it claims"
    );
    assert_eq!(
        start_checkout(&world, loopback(2), Some("198.51.100.9")).await,
        StatusCode::TOO_MANY_REQUESTS,
        "a forged X-Forwarded-For does not dodge the limit"
    );
    world.app.stop().await;
}

/// Item 5: behind the proxy (an https public URL) the login and session cookies are
/// `Secure`, and a login through Caddy works.
async fn behind_caddy_session_cookies_are_secure(backend: Backend) {
    let world = world(backend, 10).await;
    let user = enrolled_user(&world.app.database, "ops@example.com", Role::Operator).await;
    let mut agent = Agent {
        address: world.caddy.origin(),
        client: world.caddy.client(loopback(4)),
        cookies: Default::default(),
    };
    let login = agent
        .client
        .get(format!("{}/login", agent.address))
        .send()
        .await
        .unwrap();
    assert!(all_cookies_secure(&login), "{:?}", login.headers());
    let page = agent.submit_password(&user.email, PASSWORD).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    let code_page = agent.get("/login/code?next=/account").await;
    let csrf = code_page.csrf();
    let code = fresh_code(&world.app.database, &user.user_id, &user.secret).await;
    let cookies = agent
        .cookies
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect::<Vec<_>>()
        .join("; ");
    let logged_in = agent
        .client
        .post(format!("{}/login/code", agent.address))
        .header(COOKIE, cookies)
        .form(&[
            ("csrf_token", csrf.as_str()),
            ("code", code.as_str()),
            ("next", "/account"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(logged_in.status(), StatusCode::SEE_OTHER);
    let session = logged_in
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .map(|value| value.to_str().unwrap().to_string())
        .find(|value| value.starts_with("latchkey_session="))
        .expect("a session cookie");
    assert!(session.contains("; Secure"), "{session}");
    assert!(session.contains("HttpOnly"), "{session}");
    world.app.stop().await;
}

fn all_cookies_secure(response: &reqwest::Response) -> bool {
    let cookies: Vec<&str> = response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .map(|value| value.to_str().unwrap())
        .collect();
    !cookies.is_empty() && cookies.iter().all(|cookie| cookie.contains("; Secure"))
}

on_both_backends!(
    a_guest_pays_for_a_door_and_gets_the_code_through_https,
    behind_caddy_the_client_address_is_the_forwarded_one,
    behind_caddy_session_cookies_are_secure,
);
