//! Security hardening (issue 17), one test per item, over HTTP: device calls held to the
//! device networks (SSRF), API bases saved on the settings page, passcodes masked by
//! role, security headers on every page type, slow-header connections closed, the login
//! `next` refusing control characters, `/metrics` behind its token, client addresses
//! through trusted proxies only with per-account backoff, checkout rate limits, the
//! bootstrap token retired by the first enrolled admin, token revocation, credential
//! resets ending sessions and tokens, TOTP secrets sealed at rest, and CSRF on every
//! dashboard POST route.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::response::IntoResponse;
use latchkey::accounts::{password, tokens, totp, users};
use latchkey::http::auth::Role;
use latchkey::net_policy::{parse_cidrs, DeviceNetworks, TrustedProxies};
use latchkey::startup::BuildOptions;
use latchkey_aggregates::door::DoorCommand;
use latchkey_aggregates::Actor;
use reqwest::StatusCode;
use secrecy::SecretString;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::accounts_support::{enrolled_user, fresh_code, Agent, PASSWORD};
use crate::helpers::{
    eventually, spawn_app_with_settings, test_settings, Backend, TestApp, TestDatabase,
    ADMIN_TOKEN, METRICS_TOKEN,
};
use crate::on_both_backends;

const MASTER_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

on_both_backends!(
    an_auditor_never_sees_a_passcode_and_an_admin_reveal_is_explicit,
    thirty_failed_logins_through_a_trusted_proxy_do_not_lock_out_another_address,
    the_right_password_gets_in_within_seconds_after_ten_failures,
    the_bootstrap_token_is_refused_once_an_admin_is_enrolled,
    a_revoked_token_stops_working_and_token_list_shows_it,
    a_password_change_ends_other_sessions_and_resets_revoke_tokens,
    totp_secrets_are_sealed_at_rest_under_the_master_key,
    api_bases_saved_in_settings_must_be_https_and_never_take_environment_secrets,
    a_checkout_session_event_must_name_the_recorded_session,
    an_event_of_the_other_mode_is_not_applied,
    a_refunded_code_the_lock_keeps_is_shown_as_still_valid_never_revoked,
);

async fn app_with(
    backend: Backend,
    adjust: impl FnOnce(&mut latchkey::config::Settings),
) -> TestApp {
    spawn_app_with_settings(
        TestDatabase::create(backend).await,
        BuildOptions::default(),
        adjust,
    )
    .await
}

/// A little HTTP server that counts its hits and answers every request the same way.
struct Target {
    url: String,
    hits: Arc<AtomicUsize>,
}

async fn target(
    answer: impl Fn() -> axum::response::Response + Clone + Send + Sync + 'static,
) -> Target {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let router = axum::Router::new().fallback(move || {
        let counter = counter.clone();
        let answer = answer.clone();
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            answer()
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    Target { url, hits }
}

fn device_at(uid: &str, shelly_device_id: &str) -> Value {
    json!({"uid": uid, "name": uid, "location": "Lyon", "time_zone": "Europe/Paris",
           "shelly_device_id": shelly_device_id, "shelly_channel": 0,
           "plans": [{"plan_id": "p30", "name": "30 minutes", "minutes": 30, "price": 300, "currency": "eur"}]})
}

async fn switch_on(app: &TestApp, uid: &str, shelly_device_id: &str) -> (StatusCode, String) {
    let created = app
        .post_json(
            "/api/devices",
            Some(ADMIN_TOKEN),
            &device_at(uid, shelly_device_id),
        )
        .await;
    assert_eq!(created.status(), 201, "{}", created.text().await.unwrap());
    let answer = app
        .post_json(
            &format!("/api/devices/{uid}/relay"),
            Some(ADMIN_TOKEN),
            &json!({"on": true}),
        )
        .await;
    (answer.status(), answer.text().await.unwrap())
}

/// Item 1: a device URL on loopback or a metadata address is never called by default;
/// with loopback opened explicitly (as the simulators need), a redirect is not followed
/// and the target's body never comes back in the error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_calls_never_reach_loopback_or_metadata_and_follow_no_redirect() {
    let metadata = target(|| "SECRET-METADATA-TOKEN".into_response()).await;
    let location = format!("{}/latest/meta-data/iam", metadata.url);
    let redirecting = target(move || {
        (
            StatusCode::FOUND,
            [(axum::http::header::LOCATION, location.clone())],
            "SECRET-BODY-OF-THE-TARGET",
        )
            .into_response()
    })
    .await;

    // The product's default: private ranges only.
    let app = app_with(Backend::Sqlite, |settings| {
        settings.security.device_networks = DeviceNetworks::default();
    })
    .await;
    let (status, body) = switch_on(&app, "loopback", &redirecting.url).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert!(body.contains("LATCHKEY_DEVICE_NETWORKS"), "{body}");
    assert_eq!(
        redirecting.hits.load(Ordering::SeqCst),
        0,
        "loopback was called"
    );
    let (status, body) = switch_on(&app, "metadata", "http://169.254.169.254").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert!(body.contains("link-local"), "{body}");
    app.stop().await;

    // Even a configuration that opens everything keeps metadata closed.
    let app = app_with(Backend::Sqlite, |settings| {
        settings.security.device_networks = DeviceNetworks::new(parse_cidrs("0.0.0.0/0").unwrap());
    })
    .await;
    let (status, body) = switch_on(&app, "metadata", "http://169.254.169.254/").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert!(body.contains("link-local"), "{body}");
    app.stop().await;

    // Loopback opened explicitly: the target is called, its redirect is not followed.
    let app = app_with(Backend::Sqlite, |_| {}).await;
    let (status, body) = switch_on(&app, "redirecting", &redirecting.url).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert!(redirecting.hits.load(Ordering::SeqCst) >= 1);
    assert_eq!(
        metadata.hits.load(Ordering::SeqCst),
        0,
        "the redirect was followed"
    );
    assert!(
        !body.contains("SECRET"),
        "the target's body came back: {body}"
    );
    app.stop().await;
}

/// Item 1, second half: an API base saved on the settings page is https (or allowed by
/// the environment), and never receives a secret the environment set.
async fn api_bases_saved_in_settings_must_be_https_and_never_take_environment_secrets(
    backend: Backend,
) {
    let app = app_with(backend, |settings| {
        settings.master_key = Some(SecretString::from(MASTER_KEY.to_string()));
        settings.shelly.auth_key = Some(SecretString::from("env-shelly-key".to_string()));
        settings.security.allowed_api_hosts = vec!["stripe-sim.internal".to_string()];
    })
    .await;
    let admin = enrolled_user(&app.database, "admin@example.com", Role::Admin).await;
    let mut agent = Agent::new(&app.address);
    agent.log_in(&app.database, &admin).await;
    let csrf = agent.get("/settings").await.csrf();
    let save = |group: &'static str, name: &'static str, value: &'static str| {
        let mut agent = agent.clone();
        let csrf = csrf.clone();
        async move {
            agent
                .post(
                    &format!("/settings/{group}"),
                    &[("csrf_token", &csrf), (name, value)],
                )
                .await
        }
    };
    let plain = save("stripe", "STRIPE_API_BASE", "http://evil.example").await;
    assert_eq!(
        plain.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        plain.body
    );
    assert!(plain.body.contains("must be an https://"), "{}", plain.body);
    let env_secret = save("shelly", "SHELLY_SERVER", "https://evil.example").await;
    assert_eq!(env_secret.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        env_secret
            .body
            .contains("credentials come from the environment"),
        "{}",
        env_secret.body
    );
    assert!(app.state.settings_store.effective().shelly.server.is_none());
    let https = save("stripe", "STRIPE_API_BASE", "https://api.stripe.example").await;
    assert_eq!(https.status, StatusCode::SEE_OTHER, "{}", https.body);
    let allowed = save(
        "stripe",
        "STRIPE_API_BASE",
        "http://stripe-sim.internal:12111",
    )
    .await;
    assert_eq!(allowed.status, StatusCode::SEE_OTHER, "{}", allowed.body);
    app.stop().await;
}

/// Item 2: door passcodes are masked for auditors on every route that carries journal
/// content; an admin sees one only by asking (`reveal_codes=true`).
async fn an_auditor_never_sees_a_passcode_and_an_admin_reveal_is_explicit(backend: Backend) {
    let app = app_with(backend, |_| {}).await;
    let door = json!({"uid": "4410021", "name": "Room 12", "location": "Lyon",
                      "time_zone": "Europe/Paris", "price": 1500, "currency": "eur",
                      "access_minutes": 120});
    let created = app.post_json("/api/doors", Some(ADMIN_TOKEN), &door).await;
    assert_eq!(created.status(), 201);
    let buses = crate::history::Buses::new(&app.database, &app.appended);
    buses
        .doors
        .execute(
            "4410021",
            DoorCommand::IssueAccessCode {
                payment_id: uuid::Uuid::new_v4(),
                actor: Actor::System,
                at: chrono::Utc::now(),
                locked_minutes: None,
            },
            latchkey::cqrs::CommandMetadata::new("system", "test"),
        )
        .await
        .unwrap();
    let revealed: Value = app
        .client
        .get(format!(
            "{}/api/aggregates/Door/4410021?reveal_codes=true",
            app.address
        ))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let codes = revealed["state"]["access_codes"].as_object().unwrap();
    let code = codes.values().next().unwrap()["code"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(code.len(), 8, "{revealed}");
    let code = code.as_str();
    let auditor = app.token(Role::Auditor).await;
    let routes = [
        "/api/events",
        "/api/events?aggregate_type=Door&aggregate_id=4410021",
        "/api/aggregates/Door/4410021",
        "/api/audit",
        "/api/doors",
    ];
    let audited = eventually(50, Duration::from_millis(100), || async {
        fetch_text(&app, "/api/audit", &auditor)
            .await
            .contains("access_code_issued")
    })
    .await;
    assert!(audited, "the audit log never showed the issue");
    for route in routes {
        let text = fetch_text(&app, route, &auditor).await;
        assert!(!text.contains(code), "{route} showed the passcode: {text}");
    }
    let text = fetch_text(&app, "/api/events", &auditor).await;
    assert!(text.contains("\"code\":\"***\""), "{text}");
    let refused = app
        .client
        .get(format!(
            "{}/api/aggregates/Door/4410021?reveal_codes=true",
            app.address
        ))
        .bearer_auth(&auditor)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    app.stop().await;
}

/// `route`'s body, read with `token` (which must be answered 200).
async fn fetch_text(app: &TestApp, route: &str, token: &str) -> String {
    let response = app
        .client
        .get(format!("{}{route}", app.address))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{route}");
    response.text().await.unwrap()
}

/// Item 3: the security headers on every page type; no-store where a code can show;
/// HSTS only for an https public URL; pages carry no inline style or script.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_headers_are_on_every_page_type() {
    let app = app_with(Backend::Sqlite, |_| {}).await;
    let admin = enrolled_user(&app.database, "admin@example.com", Role::Admin).await;
    let mut agent = Agent::new(&app.address);
    agent.log_in(&app.database, &admin).await;
    let pages = [
        "/health",
        "/login",
        "/dashboard",
        "/pay/unknown-door",
        "/use/unknown-device",
        "/access/unknown-token",
        "/session/unknown-token",
        "/api/access/unknown-token",
        "/api/session/unknown-token",
        "/api/doors",
        "/static/app.css",
        "/api/openapi.json",
        "/no/such/path",
    ];
    for path in pages {
        let response = app.get(path).await;
        let headers = response.headers();
        let header = |name: &str| {
            headers
                .get(name)
                .map(|value| value.to_str().unwrap().to_string())
                .unwrap_or_default()
        };
        let csp = header("content-security-policy");
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp:?}");
        assert!(csp.contains("script-src 'self'"), "{path}: {csp:?}");
        assert!(!csp.contains("unsafe-inline"), "{path}: {csp:?}");
        assert_eq!(header("x-content-type-options"), "nosniff", "{path}");
        assert_eq!(header("x-frame-options"), "DENY", "{path}");
        assert_eq!(header("referrer-policy"), "no-referrer", "{path}");
        assert!(
            header("strict-transport-security").is_empty(),
            "{path}: http"
        );
        let guest_code_page = ["/access/", "/session/", "/api/access/", "/api/session/"]
            .iter()
            .any(|prefix| path.starts_with(prefix));
        if guest_code_page {
            assert_eq!(header("cache-control"), "no-store", "{path}");
        }
    }
    for path in [
        "/login",
        "/dashboard",
        "/account",
        "/settings",
        "/pay/unknown-door",
    ] {
        let page = agent.get(path).await;
        assert!(
            !page.body.contains("<style"),
            "{path} has an inline style element"
        );
        assert!(
            !page.body.contains(" style="),
            "{path} has an inline style attribute"
        );
        assert!(
            !page.body.contains("<script>"),
            "{path} has an inline script"
        );
    }
    let brand = app.get("/static/brand.css").await.text().await.unwrap();
    assert!(brand.contains("--brand:#1f5fbf"), "{brand}");
    app.stop().await;

    let app = app_with(Backend::Sqlite, |settings| {
        settings.public_url = "https://pay.example".parse().unwrap();
    })
    .await;
    let response = app.get("/login").await;
    let hsts = response.headers().get("strict-transport-security").unwrap();
    assert!(hsts.to_str().unwrap().starts_with("max-age="), "{hsts:?}");
    app.stop().await;
}

/// Item 4: a connection that never finishes its headers is closed within 10 s; a body
/// over the limit is refused unread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_header_connection_is_closed_and_oversized_bodies_are_refused() {
    let app = app_with(Backend::Sqlite, |_| {}).await;
    let address = app.address.trim_start_matches("http://").to_string();
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: latchkey\r\nX-Slow: 1\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut buffer = [0_u8; 512];
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the slow connection was still open after 10 s"
    );
    assert!(started.elapsed() < Duration::from_secs(10));

    let huge = vec![b'x'; 2 * 1024 * 1024];
    let response = app
        .client
        .post(format!("{}/api/stripe/webhook", app.address))
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    app.stop().await;
}

/// Item 5: `next` with a TAB or LF (raw or percent-encoded) falls back to the dashboard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_with_control_characters_is_refused() {
    let app = app_with(Backend::Sqlite, |_| {}).await;
    let user = enrolled_user(&app.database, "ann@example.com", Role::Operator).await;
    let mut agent = Agent::new(&app.address);
    for next in [
        "%2F%09%2Fevil.example",
        "/%09/evil.example",
        "%2F%0A%2Fevil.example",
    ] {
        let page = agent.get(&format!("/login?next={next}")).await;
        assert!(
            page.body.contains(r#"name="next" value="/dashboard""#),
            "{next}: {}",
            page.body
        );
    }
    let csrf = agent.get("/login").await.csrf();
    let page = agent
        .post(
            "/login",
            &[
                ("csrf_token", &csrf),
                ("email", &user.email),
                ("password", PASSWORD),
                ("next", "/\t/evil.example"),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(
        page.location.as_deref(),
        Some("/login/code?next=%2Fdashboard")
    );
    let code_page = agent.get("/login/code").await;
    let code = fresh_code(&app.database, &user.user_id, &user.secret).await;
    let page = agent
        .post(
            "/login/code",
            &[
                ("csrf_token", &code_page.csrf()),
                ("code", &code),
                ("next", "/\n/evil.example"),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    assert_eq!(page.location.as_deref(), Some("/dashboard"));
    app.stop().await;
}

/// Item 6: `/metrics` answers 401 without its token (and when none is configured).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_need_their_bearer_token() {
    let app = app_with(Backend::Sqlite, |_| {}).await;
    assert_eq!(app.get("/metrics").await.status(), StatusCode::UNAUTHORIZED);
    let wrong = app
        .client
        .get(format!("{}/metrics", app.address))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let scraped = app.metrics().await;
    assert_eq!(scraped.status(), StatusCode::OK);
    assert!(scraped
        .text()
        .await
        .unwrap()
        .contains("latchkey_journal_events"));
    app.stop().await;
    let app = app_with(Backend::Sqlite, |settings| {
        settings.security.metrics_token = None;
    })
    .await;
    let closed = app
        .client
        .get(format!("{}/metrics", app.address))
        .bearer_auth(METRICS_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(closed.status(), StatusCode::UNAUTHORIZED);
    assert!(closed
        .text()
        .await
        .unwrap()
        .contains("LATCHKEY_METRICS_TOKEN"));
    app.stop().await;
}

/// `POST /login` with a forwarding header, as a TLS proxy would send it.
async fn login_from(
    agent: &mut Agent,
    forwarded_for: &str,
    email: &str,
    password: &str,
) -> StatusCode {
    let csrf = agent.get("/login").await.csrf();
    agent
        .post_with_header(
            "/login",
            ("x-forwarded-for", forwarded_for),
            &[
                ("csrf_token", &csrf),
                ("email", email),
                ("password", password),
            ],
        )
        .await
        .status
}

/// Item 7: behind a trusted proxy every client has its own address: one address's 30
/// failures stop that address only.
async fn thirty_failed_logins_through_a_trusted_proxy_do_not_lock_out_another_address(
    backend: Backend,
) {
    let app = app_with(backend, |settings| {
        settings.security.trusted_proxies =
            TrustedProxies::new(parse_cidrs("127.0.0.1/32").unwrap());
    })
    .await;
    let user = enrolled_user(&app.database, "ops@example.com", Role::Operator).await;
    let mut attacker = Agent::new(&app.address);
    for attempt in 0..30 {
        let email = format!("guess{attempt}@example.com");
        let status = login_from(&mut attacker, "203.0.113.66", &email, "wrong password").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "attempt {attempt}");
    }
    let status = login_from(&mut attacker, "203.0.113.66", "guess99@example.com", "x").await;
    assert_eq!(
        status,
        StatusCode::TOO_MANY_REQUESTS,
        "the attacking address stops"
    );
    let mut operator = Agent::new(&app.address);
    let status = login_from(&mut operator, "198.51.100.7", &user.email, PASSWORD).await;
    assert_eq!(
        status,
        StatusCode::SEE_OTHER,
        "another address still logs in"
    );
    // A forwarding header from an untrusted peer is not believed.
    let app2 = app_with(backend, |_| {}).await;
    let mut spoofer = Agent::new(&app2.address);
    for attempt in 0..30 {
        let forwarded = format!("198.51.100.{attempt}");
        let email = format!("guess{attempt}@example.com");
        login_from(&mut spoofer, &forwarded, &email, "wrong password").await;
    }
    let status = login_from(&mut spoofer, "192.0.2.200", "another@example.com", "x").await;
    assert_eq!(
        status,
        StatusCode::TOO_MANY_REQUESTS,
        "the peer address counts"
    );
    app2.stop().await;
    app.stop().await;
}

/// Item 7: failures on one account slow it down (backoff) rather than lock it: after ten
/// failures the right password gets in within seconds, not 15 minutes.
async fn the_right_password_gets_in_within_seconds_after_ten_failures(backend: Backend) {
    let app = app_with(backend, |_| {}).await;
    let user = enrolled_user(&app.database, "bob@example.com", Role::Operator).await;
    let mut agent = Agent::new(&app.address);
    for attempt in 1..=10 {
        let page = agent
            .submit_password(&user.email, &format!("wrong password {attempt}"))
            .await;
        assert_eq!(page.status, StatusCode::UNAUTHORIZED, "attempt {attempt}");
    }
    let limited = agent.submit_password(&user.email, PASSWORD).await;
    assert_eq!(
        limited.status,
        StatusCode::TOO_MANY_REQUESTS,
        "an attacker is slowed"
    );
    let started = std::time::Instant::now();
    let mut last = StatusCode::TOO_MANY_REQUESTS;
    let got_in = eventually(50, Duration::from_millis(200), || {
        let mut agent = agent.clone();
        let email = user.email.clone();
        async move { agent.submit_password(&email, PASSWORD).await.status == StatusCode::SEE_OTHER }
    })
    .await;
    if !got_in {
        last = agent.submit_password(&user.email, PASSWORD).await.status;
    }
    assert!(
        got_in,
        "the owner was still refused ({last}) after {:?}",
        started.elapsed()
    );
    app.stop().await;
}

/// Item 7: checkout starts are limited per client address and per door, with 429,
/// Retry-After and a message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkout_starts_are_rate_limited_per_address_and_per_door() {
    let app = app_with(Backend::Sqlite, |settings| {
        settings.security.trusted_proxies =
            TrustedProxies::new(parse_cidrs("127.0.0.1/32").unwrap());
        settings.security.checkout_per_address_per_minute = 3;
        settings.security.checkout_per_target_per_minute = 5;
    })
    .await;
    let start = |from: &'static str, door: &'static str| {
        let client = app.client.clone();
        let url = format!("{}/api/checkout/door/{door}", app.address);
        async move {
            client
                .post(url)
                .header("x-forwarded-for", from)
                .json(&json!({"email": "guest@example.com"}))
                .send()
                .await
                .unwrap()
        }
    };
    for _ in 0..3 {
        assert_ne!(
            start("203.0.113.1", "door-a").await.status(),
            StatusCode::TOO_MANY_REQUESTS
        );
    }
    let limited = start("203.0.113.1", "door-b").await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let body: Value = limited.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("Nothing was charged"));
    assert_ne!(
        start("203.0.113.2", "door-a").await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_ne!(
        start("203.0.113.3", "door-a").await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    let per_door = start("203.0.113.4", "door-a").await;
    assert_eq!(
        per_door.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "six starts at one door"
    );
    app.stop().await;
}

/// Item 8: `LATCHKEY_API_TOKEN` works until the first admin finishes enrolment.
async fn the_bootstrap_token_is_refused_once_an_admin_is_enrolled(backend: Backend) {
    let app = app_with(backend, |settings| {
        settings.security.bootstrap_token_always = false;
    })
    .await;
    let get = || async {
        app.client
            .get(format!("{}/api/doors", app.address))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
    };
    assert_eq!(get().await.status(), StatusCode::OK);
    let hash = password::hash(PASSWORD).unwrap();
    users::create(&app.database, "new@example.com", Role::Admin, &hash, true)
        .await
        .unwrap();
    assert_eq!(get().await.status(), StatusCode::OK, "not enrolled yet");
    enrolled_user(&app.database, "admin@example.com", Role::Admin).await;
    let refused = get().await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert!(refused.text().await.unwrap().contains("only bootstraps"));
    app.stop().await;
}

/// Item 8: `latchkey token list` shows a token by id and label; `token revoke` ends it.
async fn a_revoked_token_stops_working_and_token_list_shows_it(backend: Backend) {
    let app = app_with(backend, |_| {}).await;
    let token = latchkey::http::auth::create_token(&app.database, Role::Auditor, "reporting")
        .await
        .unwrap();
    let get = |token: String| {
        let client = app.client.clone();
        let url = format!("{}/api/doors", app.address);
        async move {
            client
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(get(token.clone()).await, StatusCode::OK);
    let listed = tokens::list_all(&app.database).await.unwrap();
    let row = listed.iter().find(|row| row.label == "reporting").unwrap();
    let line = latchkey::cli::token::list_line(row);
    assert!(line.contains(&token[token.len() - 4..]), "{line}");
    assert!(!line.contains(&token), "{line}");
    let settings = test_settings(&app.test_database.url);
    let command = latchkey::cli::token::TokenCommand::Revoke {
        id_or_label: row.token_id.clone().unwrap(),
    };
    latchkey::cli::token::run(&settings, command).await.unwrap();
    assert_eq!(get(token).await, StatusCode::UNAUTHORIZED);
    let again = latchkey::cli::token::TokenCommand::Revoke {
        id_or_label: "no-such-token".into(),
    };
    assert!(latchkey::cli::token::run(&settings, again).await.is_err());
    app.stop().await;
}

/// Item 8: changing one's password logs out the other sessions; an admin's 2FA or
/// password reset ends the user's sessions and API tokens; `User`'s Debug hides secrets.
async fn a_password_change_ends_other_sessions_and_resets_revoke_tokens(backend: Backend) {
    let app = app_with(backend, |_| {}).await;
    let user = enrolled_user(&app.database, "cat@example.com", Role::Operator).await;
    let mut laptop = Agent::new(&app.address);
    laptop.log_in(&app.database, &user).await;
    let mut phone = Agent::new(&app.address);
    phone.log_in(&app.database, &user).await;
    let page = laptop.get("/account/password").await;
    let new_password = "a brand new passphrase 42";
    let changed = laptop
        .post(
            "/account/password",
            &[
                ("csrf_token", &page.csrf()),
                ("current", PASSWORD),
                ("new_password", new_password),
                ("confirm", new_password),
            ],
        )
        .await;
    assert_eq!(changed.status, StatusCode::SEE_OTHER, "{}", changed.body);
    assert_eq!(
        laptop.get("/account").await.status,
        StatusCode::OK,
        "this session stays"
    );
    let phone_page = phone.get("/account").await;
    assert_eq!(
        phone_page.status,
        StatusCode::SEE_OTHER,
        "the other session ended"
    );

    let stored = users::by_id(&app.database, &user.user_id)
        .await
        .unwrap()
        .unwrap();
    let debug = format!("{stored:?}");
    assert!(!debug.contains(&stored.password_hash), "{debug}");
    assert!(!debug.contains(&user.secret), "{debug}");

    let token = tokens::create_for_user(&app.database, &stored, "script")
        .await
        .unwrap();
    let status = |token: String| {
        let client = app.client.clone();
        let url = format!("{}/api/doors", app.address);
        async move {
            client
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(status(token.clone()).await, StatusCode::OK);
    users::reset_totp(&app.database, &user.user_id)
        .await
        .unwrap();
    assert_eq!(
        status(token).await,
        StatusCode::UNAUTHORIZED,
        "2FA reset revokes tokens"
    );

    let again = enrolled_user(&app.database, "dan@example.com", Role::Operator).await;
    let again_user = users::by_id(&app.database, &again.user_id)
        .await
        .unwrap()
        .unwrap();
    let token = tokens::create_for_user(&app.database, &again_user, "script")
        .await
        .unwrap();
    let mut dan = Agent::new(&app.address);
    dan.log_in(&app.database, &again).await;
    let admin = enrolled_user(&app.database, "admin@example.com", Role::Admin).await;
    let mut admin_agent = Agent::new(&app.address);
    admin_agent.log_in(&app.database, &admin).await;
    let csrf = admin_agent.get("/users").await.csrf();
    let reset = admin_agent
        .post(
            &format!("/users/{}/reset-password", again.user_id),
            &[("csrf_token", &csrf)],
        )
        .await;
    assert_eq!(reset.status, StatusCode::OK, "{}", reset.body);
    assert_eq!(
        status(token).await,
        StatusCode::UNAUTHORIZED,
        "password reset revokes tokens"
    );
    assert_eq!(
        dan.get("/account").await.status,
        StatusCode::SEE_OTHER,
        "and sessions"
    );
    app.stop().await;
}

/// Item 8: with a master key, a TOTP secret chosen on the enrolment page is sealed in the
/// database, and logging in with its codes still works; without one it is stored as
/// typed (the documented fallback).
async fn totp_secrets_are_sealed_at_rest_under_the_master_key(backend: Backend) {
    let app = app_with(backend, |settings| {
        settings.master_key = Some(SecretString::from(MASTER_KEY.to_string()));
    })
    .await;
    let hash = password::hash(PASSWORD).unwrap();
    let user = users::create(
        &app.database,
        "eve@example.com",
        Role::Operator,
        &hash,
        false,
    )
    .await
    .unwrap();
    let mut agent = Agent::new(&app.address);
    let page = agent.submit_password(&user.email, PASSWORD).await;
    assert_eq!(page.location.as_deref(), Some("/account/2fa"));
    let page = agent.get("/account/2fa").await;
    let marker = "data-secret=\"";
    let start = page.body.find(marker).expect("the secret on the page") + marker.len();
    let secret = page.body[start..start + page.body[start..].find('"').unwrap()].to_string();
    let stored: Option<String> = latchkey::on_pool!(&app.database, pool => {
        sqlx::query_scalar("SELECT totp_secret FROM users WHERE user_id = $1")
            .bind(&user.user_id)
            .fetch_one(pool)
            .await
    })
    .unwrap();
    let stored = stored.unwrap();
    assert!(
        !stored.contains(&secret),
        "plaintext TOTP secret in the database"
    );
    assert!(stored.starts_with("sealed:aes256gcm:"), "{stored}");
    let step = totp::step_at(chrono::Utc::now().timestamp());
    let code = totp::code_for_step(&totp::base32_decode(&secret).unwrap(), step);
    let confirmed = agent
        .post(
            "/account/2fa",
            &[("csrf_token", &page.csrf()), ("code", &code)],
        )
        .await;
    assert_eq!(confirmed.status, StatusCode::OK, "{}", confirmed.body);
    let backup: Vec<String> = latchkey::on_pool!(&app.database, pool => {
        sqlx::query_scalar("SELECT code_hash FROM user_backup_codes WHERE user_id = $1")
            .bind(&user.user_id)
            .fetch_all(pool)
            .await
    })
    .unwrap();
    assert_eq!(backup.len(), 10);
    assert!(
        backup.iter().all(|hash| hash.starts_with("s1$")),
        "{backup:?}"
    );
    let mut again = Agent::new(&app.address);
    let test_user = crate::accounts_support::TestUser {
        user_id: user.user_id.clone(),
        email: user.email.clone(),
        secret,
    };
    again.log_in(&app.database, &test_user).await;
    app.stop().await;
}

/// Item 10: a `checkout.session.*` event whose session is not the one recorded for the
/// payment its metadata names is not applied, and binds none of its ids; the recorded
/// session confirms the payment.
async fn a_checkout_session_event_must_name_the_recorded_session(backend: Backend) {
    use latchkey::payments::{refs, stripe_facts};
    use latchkey::stripe_events::PaymentReference;
    let (app, _) = crate::checkout::app_with_fake_stripe(backend).await;
    let started: Value = app
        .post_json(
            "/api/checkout/door/77",
            None,
            &json!({"email": "guest@example.com"}),
        )
        .await
        .json()
        .await
        .unwrap();
    let payment_id: uuid::Uuid = started["payment_id"].as_str().unwrap().parse().unwrap();
    let completed = |event_id: &str, session: &str, intent: &str| {
        json!({"id": event_id, "object": "event", "type": "checkout.session.completed",
               "created": chrono::Utc::now().timestamp(), "livemode": false,
               "data": {"object": {"id": session, "object": "checkout.session",
                   "payment_status": "paid", "payment_intent": intent, "amount_total": 1500,
                   "currency": "eur", "metadata": {"latchkey_payment_id": payment_id.to_string()}}}})
    };
    let forged = completed("evt_forged", "cs_forged", "pi_forged");
    let outcome = stripe_facts::apply(&app.state.buses, &app.database, &forged).await;
    let refusal = outcome.expect_err("a forged session is not applied");
    assert!(refusal.0.contains("not the session recorded"), "{refusal}");
    let (payment, _) = app
        .state
        .buses
        .payments
        .load(&payment_id.to_string())
        .await
        .unwrap();
    assert_eq!(
        payment.status(),
        latchkey_aggregates::payment::PaymentStatus::Pending
    );
    let bound = refs::resolve(
        &app.database,
        &[PaymentReference::PaymentIntent("pi_forged".into())],
    )
    .await
    .unwrap();
    assert_eq!(bound, None, "a refused event bound its payment intent");

    let session = format!("cs_test_{}", payment_id.simple());
    let intent = format!("pi_test_{}", payment_id.simple());
    let genuine = completed("evt_genuine", &session, &intent);
    let outcome = stripe_facts::apply(&app.state.buses, &app.database, &genuine)
        .await
        .unwrap();
    assert_eq!(outcome, stripe_facts::StripeOutcome::Applied { payment_id });
    app.stop().await;
}

/// Item 10: a live-mode event reaching a server with a test key (or the reverse) is
/// stored, and ignored with the reason; nothing is applied.
async fn an_event_of_the_other_mode_is_not_applied(backend: Backend) {
    use crate::stripe_support::{spawn_stripe_app, Setup};
    let database = TestDatabase::create(backend).await;
    let app = spawn_stripe_app(
        &database,
        Setup {
            api_base: Some("http://127.0.0.1:9".to_string()),
            ..Setup::default()
        },
    )
    .await;
    assert_eq!(app.stripe.livemode(), Some(false));
    let event_id = crate::stripe_support::unique_event_id();
    let mut body: Value = serde_json::from_str(&crate::stripe_support::event(
        &event_id,
        "payment_intent.succeeded",
    ))
    .unwrap();
    body["livemode"] = json!(true);
    let answer = app.post_signed(&body.to_string()).await;
    assert_eq!(answer.status(), 200);
    let path = format!("/api/stripe/deliveries/{event_id}");
    let ignored = eventually(100, Duration::from_millis(100), || async {
        let response = app.get_authorized(&path).await;
        response.text().await.unwrap().contains("\"ignored\"")
    })
    .await;
    let detail = app.get_authorized(&path).await.text().await.unwrap();
    assert!(ignored, "{detail}");
    assert!(
        detail.contains("live-mode event while the secret key is in test mode"),
        "{detail}"
    );
    app.stop().await;
}

/// Item 9: on a lock without a gateway, refunding deletes only TTLock's cloud record; the
/// revocation records `still_valid_until`, the refund confirmation warns, and the guest
/// page says the code keeps working until its end instead of "revoked".
async fn a_refunded_code_the_lock_keeps_is_shown_as_still_valid_never_revoked(backend: Backend) {
    use latchkey::payments::stripe_facts;
    use latchkey_aggregates::door::services::IssuedPasscode;
    let (app, _) = crate::checkout::app_with_fake_stripe(backend).await;
    let started: Value = app
        .post_json(
            "/api/checkout/door/77",
            None,
            &json!({"email": "guest@example.com"}),
        )
        .await
        .json()
        .await
        .unwrap();
    let payment_id: uuid::Uuid = started["payment_id"].as_str().unwrap().parse().unwrap();
    let token = started["status_url"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();
    // The lock has no gateway: TTLock hands out a period passcode the lock keeps offline.
    let buses = crate::history::Buses::new(&app.database, &app.appended);
    let now = chrono::Utc::now();
    let valid_to = now + chrono::Duration::hours(2);
    buses.locks.queue_issue(Ok(IssuedPasscode {
        passcode_id: 77001,
        code: "48151623".into(),
        valid_from: now,
        valid_to,
        remotely_revocable: false,
        fallback: None,
    }));
    buses
        .doors
        .execute(
            "77",
            DoorCommand::IssueAccessCode {
                payment_id,
                actor: Actor::System,
                at: now,
                locked_minutes: None,
            },
            latchkey::cqrs::CommandMetadata::new("system", "test"),
        )
        .await
        .unwrap();
    let intent = format!("pi_test_{}", payment_id.simple());
    let event = |id: &str, kind: &str, object: Value| {
        json!({"id": id, "object": "event", "type": kind, "livemode": false,
               "created": chrono::Utc::now().timestamp(), "data": {"object": object}})
    };
    let succeeded = event(
        "evt_paid",
        "payment_intent.succeeded",
        json!({"id": intent, "object": "payment_intent", "amount": 1500, "amount_received": 1500,
               "currency": "eur", "status": "succeeded", "latest_charge": "ch_77",
               "metadata": {"latchkey_payment_id": payment_id.to_string()}}),
    );
    stripe_facts::apply(&app.state.buses, &app.database, &succeeded)
        .await
        .unwrap();

    let admin = enrolled_user(&app.database, "admin@example.com", Role::Admin).await;
    let mut agent = Agent::new(&app.address);
    agent.log_in(&app.database, &admin).await;
    let detail_path = format!("/dashboard/payments/{payment_id}");
    let listed = eventually(50, Duration::from_millis(100), || {
        let mut agent = agent.clone();
        let path = detail_path.clone();
        async move { agent.get(&path).await.status == StatusCode::OK }
    })
    .await;
    assert!(listed, "the payment never reached the payments page");
    let csrf = agent.get(&detail_path).await.csrf();
    let confirmation = agent
        .post(&format!("{detail_path}/refund"), &[("csrf_token", &csrf)])
        .await;
    assert_eq!(confirmation.status, StatusCode::OK, "{}", confirmation.body);
    assert!(
        confirmation.body.contains("cannot be removed remotely"),
        "{}",
        confirmation.body
    );

    let refunded = event(
        "evt_refunded",
        "charge.refunded",
        json!({"id": "ch_77", "object": "charge", "payment_intent": intent, "amount": 1500,
               "amount_refunded": 1500, "currency": "eur", "metadata": {}}),
    );
    stripe_facts::apply(&app.state.buses, &app.database, &refunded)
        .await
        .unwrap();
    let recorded = eventually(100, Duration::from_millis(100), || async {
        let (door, _) = app.state.buses.doors.load("77").await.unwrap();
        door.access_code(payment_id)
            .is_some_and(|code| code.still_valid_until == Some(valid_to))
    })
    .await;
    assert!(recorded, "the revocation did not record still_valid_until");
    let answer = app.get(&format!("/api/access/{token}")).await;
    assert_eq!(answer.status(), StatusCode::GONE);
    let body = answer.text().await.unwrap();
    assert!(body.contains("keeps opening the door until"), "{body}");
    assert!(!body.contains("Access revoked"), "{body}");
    let page = app
        .get(&format!("/access/{token}"))
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains("keeps opening the door until"), "{page}");
    assert!(!page.contains("Access revoked"), "{page}");
    app.stop().await;
}

/// Item 11: every POST route of the dashboard and account pages, as the routers declare
/// them, answers 403 to a logged-in admin's post without the CSRF token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_post_route_without_csrf_is_refused() {
    let routes = dashboard_post_routes();
    assert!(routes.len() >= 20, "found only {routes:?}");
    assert!(routes
        .iter()
        .any(|route| route == "/dashboard/deliveries/{event_id}/retry"));
    let app = app_with(Backend::Sqlite, |_| {}).await;
    let admin = enrolled_user(&app.database, "admin@example.com", Role::Admin).await;
    let mut agent = Agent::new(&app.address);
    agent.log_in(&app.database, &admin).await;
    for route in &routes {
        let path = route
            .split('/')
            .map(|part| if part.starts_with('{') { "x" } else { part })
            .collect::<Vec<_>>()
            .join("/");
        let page = agent
            .post(&path, &[("reason", "test"), ("on", "true")])
            .await;
        assert_eq!(page.status, StatusCode::FORBIDDEN, "{route}: {}", page.body);
    }
    assert!(
        agent.get("/dashboard").await.status == StatusCode::OK,
        "still logged in"
    );
    app.stop().await;
}

/// The paths of every `.route(path, … post(…))` in the dashboard and account routers
/// (`src/ui/dashboard`, `src/ui/account`), read from their source so that a new route is
/// covered the day it is added.
fn dashboard_post_routes() -> Vec<String> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/ui");
    let mut routes = Vec::new();
    for folder in ["dashboard", "account"] {
        for entry in std::fs::read_dir(root.join(folder)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|ext| ext != "rs") {
                continue;
            }
            let source = std::fs::read_to_string(&path).unwrap();
            let compact: String = source.split_whitespace().collect::<Vec<_>>().join(" ");
            for piece in compact.split(".route(").skip(1) {
                let Some(rest) = piece.trim_start().strip_prefix('"') else {
                    continue;
                };
                let Some((route, tail)) = rest.split_once('"') else {
                    continue;
                };
                let handler = tail.split(".route(").next().unwrap_or_default();
                let handler = handler.split(".merge(").next().unwrap_or_default();
                if handler.contains("post(") && !routes.contains(&route.to_string()) {
                    routes.push(route.to_string());
                }
            }
        }
    }
    routes.sort();
    routes
}
