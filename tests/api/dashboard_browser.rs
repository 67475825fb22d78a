//! The operator pages in headless Chromium: role rules as a person meets them, a force
//! end that switches the relay OFF, the maintenance toggle, the live countdown, and
//! screenshots of every page at laptop and phone sizes (with the accessibility check).

use chrono::Utc;
use fantoccini::Locator;
use latchkey::http::auth::Role;
use latchkey_aggregates::session::SessionState;
use serde_json::json;

use crate::browser::{Browser, PHONE};
use crate::dashboard_pages::{insert_payment, login, uuid_for, Login};
use crate::device_sessions::{pay, session_state, wait_for, world};
use crate::helpers::{eventually, spawn_app, Backend, TestApp, ADMIN_TOKEN};
use crate::sim_helpers::PLUG;

const LAPTOP: (u32, u32) = (1440, 900);

/// A browser logged in as `login` on `app` (the session cookie set on its origin).
async fn logged_in(app: &TestApp, login: &Login, size: (u32, u32)) -> Browser {
    let browser = Browser::start(size).await;
    browser.open(&format!("{}/health", app.address)).await;
    // Set from the page (the server sets it HttpOnly; reading it is all the server does).
    browser
        .client
        .execute(
            "document.cookie = arguments[0] + '; path=/'; return document.cookie.length;",
            vec![json!(login.cookie)],
        )
        .await
        .unwrap();
    browser
}

async fn has(browser: &Browser, css: &str) -> bool {
    browser.client.find(Locator::Css(css)).await.is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auditor_sees_no_refund_button_and_the_refund_endpoint_refuses() {
    let app = spawn_app(Backend::Sqlite).await;
    let id = uuid_for(1);
    insert_payment(&app, &id, "succeeded", "d1", 3).await;
    let auditor = login(&app.database, Role::Auditor).await;
    let browser = logged_in(&app, &auditor, LAPTOP).await;
    browser
        .open(&format!("{}/dashboard/payments/{id}", app.address))
        .await;
    browser.wait_for_text("History", 10).await;
    assert!(
        !has(&browser, "#refund-button").await,
        "no refund button for auditors"
    );
    let status = browser
        .client
        .execute(
            "const [id, csrf] = arguments; \
             return fetch('/api/payments/' + id + '/refund', {method: 'POST', \
               headers: {'Content-Type': 'application/json', 'X-CSRF-Token': csrf}, body: '{}'}) \
             .then(r => r.status);",
            vec![json!(id), json!(auditor.csrf)],
        )
        .await
        .unwrap();
    assert_eq!(status, json!(403), "the refund endpoint refuses an auditor");
    let status = browser
        .client
        .execute(
            "const [id, csrf] = arguments; \
             const body = new URLSearchParams({csrf_token: csrf, amount: '1.00', confirm: 'yes'}); \
             return fetch('/dashboard/payments/' + id + '/refund', {method: 'POST', body}) \
             .then(r => r.status);",
            vec![json!(id), json!(auditor.csrf)],
        )
        .await
        .unwrap();
    assert_eq!(status, json!(403), "so does the page's refund form post");
    browser.close().await;

    let admin = login(&app.database, Role::Admin).await;
    let browser = logged_in(&app, &admin, LAPTOP).await;
    browser
        .open(&format!("{}/dashboard/payments/{id}", app.address))
        .await;
    browser.wait_for_text("History", 10).await;
    assert!(
        has(&browser, "#refund-button").await,
        "admins get the button"
    );
    browser.close().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_force_ends_a_session_and_the_relay_goes_off() {
    let world = world(Backend::Sqlite).await;
    let app = &world.app;
    let payment_id = pay(&world).await;
    assert!(
        wait_for(|| async {
            session_state(&world, payment_id).await == Some(SessionState::Active)
        })
        .await
    );
    assert!(
        world.sims.shelly.relay(PLUG, 0).unwrap().output,
        "the relay is ON"
    );
    let operator = login(&app.database, Role::Operator).await;
    let browser = logged_in(app, &operator, LAPTOP).await;
    browser
        .open(&format!("{}/dashboard/sessions", app.address))
        .await;
    let short = &payment_id.to_string()[..8];
    let mut found = false;
    for _ in 0..50 {
        if browser.text().await.contains(short) && has(&browser, "time.remaining").await {
            found = true;
            break;
        }
        browser.client.refresh().await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(found, "the active session is listed with its countdown");
    let countdown = browser
        .client
        .find(Locator::Css("time.remaining"))
        .await
        .unwrap();
    let before = countdown.text().await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let after = countdown.text().await.unwrap();
    assert_ne!(before, after, "the script counts the remaining time down");
    browser.screenshot("dashboard-sessions-live-1440").await;

    let reason = browser
        .client
        .find(Locator::Css("form.inline input[name=reason]"))
        .await
        .unwrap();
    reason.send_keys("guest asked to stop").await.unwrap();
    browser
        .client
        .find(Locator::Css("form.inline button.danger"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let mut ended = false;
    for _ in 0..50 {
        let url = browser.client.current_url().await.unwrap();
        if url.as_str().contains("ended=") {
            ended = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(ended, "back on the sessions page after the post");
    browser.wait_for_text("was ended", 10).await;
    assert!(
        wait_for(|| async { !world.sims.shelly.relay(PLUG, 0).unwrap().output }).await,
        "the relay goes OFF"
    );
    let relay = world.sims.shelly.relay(PLUG, 0).unwrap();
    let log = serde_json::to_value(&relay).unwrap()["log"].clone();
    assert_eq!(
        log.as_array().unwrap().last().unwrap()["on"],
        false,
        "{log}"
    );
    assert_eq!(
        session_state(&world, payment_id).await,
        Some(SessionState::ForceEnded)
    );
    browser.close().await;
    world.app.stop().await;
}

async fn register_door(app: &TestApp, uid: &str) {
    let door = json!({"uid": uid, "name": "Front door", "location": "Paris", "time_zone": "Europe/Paris",
                      "price": 500, "currency": "eur", "access_minutes": 60});
    assert_eq!(
        app.post_json("/api/doors", Some(ADMIN_TOKEN), &door)
            .await
            .status(),
        201
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_maintenance_toggle_blocks_the_guest_pay_page() {
    let app = spawn_app(Backend::Sqlite).await;
    register_door(&app, "5151").await;
    let operator = login(&app.database, Role::Operator).await;
    let browser = logged_in(&app, &operator, PHONE).await;
    let mut ready = false;
    for _ in 0..50 {
        browser
            .open(&format!("{}/dashboard/doors/5151", app.address))
            .await;
        if has(&browser, "#maintenance-toggle").await {
            ready = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(ready, "the door page has the toggle");
    browser
        .client
        .find(Locator::Css("#maintenance-toggle"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let mut in_maintenance = false;
    for _ in 0..50 {
        if browser.text().await.contains("End maintenance") {
            in_maintenance = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        browser.client.refresh().await.unwrap();
    }
    assert!(in_maintenance, "the page offers to end maintenance");
    browser.open(&format!("{}/pay/5151", app.address)).await;
    browser.wait_for_text("under maintenance", 10).await;
    assert!(
        !has(&browser, "form").await,
        "no payment form while in maintenance"
    );
    browser
        .screenshot("dashboard-maintenance-pay-page-390")
        .await;
    assert_eq!(app.get("/pay/5151").await.status(), 409);
    let checkout = app
        .post_json(
            "/api/checkout/door/5151",
            None,
            &json!({"email": "guest@example.com"}),
        )
        .await;
    assert_eq!(checkout.status(), 409);
    browser.close().await;
    app.stop().await;
}

/// Issue 13: a yen price is typed in yen (no ×100): "500" on the door form is ¥500,
/// stored as 500 minor units and shown as ¥500 on the doors list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_yen_door_price_typed_in_the_browser_is_stored_and_shown_in_yen() {
    let app = spawn_app(Backend::Sqlite).await;
    let door = json!({"uid": "7301", "name": "Ryokan", "location": "Kyoto", "time_zone": "Asia/Tokyo",
                      "price": 100, "currency": "jpy", "access_minutes": 60});
    assert_eq!(
        app.post_json("/api/doors", Some(ADMIN_TOKEN), &door)
            .await
            .status(),
        201
    );
    let operator = login(&app.database, Role::Operator).await;
    let browser = logged_in(&app, &operator, LAPTOP).await;
    browser
        .open(&format!("{}/dashboard/doors/7301", app.address))
        .await;
    browser.wait_for_text("Ryokan", 10).await;
    let form = browser
        .client
        .form(Locator::Css("form:has(input[name='price'])"))
        .await
        .expect("the door page has a price form");
    form.set_by_name("price", "500")
        .await
        .unwrap()
        .submit()
        .await
        .unwrap();
    let stored = || async {
        let (door, _) = app.state.buses.doors.load("7301").await.unwrap();
        door.price().map(|price| price.amount_minor)
    };
    assert!(
        eventually(50, std::time::Duration::from_millis(200), || async {
            stored().await == Some(500)
        })
        .await,
        "¥500 is 500 minor units, not 50,000: {:?}",
        stored().await
    );
    // The list is a projection: reopened until it has caught up with the edit.
    let list = format!("{}/dashboard/doors", app.address);
    assert!(
        eventually(50, std::time::Duration::from_millis(200), || async {
            browser.open(&list).await;
            browser.text().await.contains("¥500")
        })
        .await,
        "the doors list shows ¥500: {}",
        browser.text().await
    );
    browser.close().await;
    app.stop().await;
}

/// Some of everything, so every page has rows to show.
async fn seed(app: &TestApp) {
    register_door(app, "7001").await;
    let device = json!({"uid": "sauna", "name": "Sauna", "location": "Lyon", "time_zone": "Europe/Paris",
        "shelly_device_id": "shelly-sauna", "shelly_channel": 0,
        "plans": [{"plan_id": "p30", "name": "30 minutes", "minutes": 30, "price": 300, "currency": "eur"}]});
    assert_eq!(
        app.post_json("/api/devices", Some(ADMIN_TOKEN), &device)
            .await
            .status(),
        201
    );
    for n in 0..12 {
        let status = ["succeeded", "failed", "partially_refunded", "pending"][n % 4];
        insert_payment(app, &uuid_for(n), status, "7001", n as i64 * 90).await;
    }
    let today = Utc::now().date_naive();
    let mut pooled = latchkey::projections_runtime::PooledConn::acquire(&app.database)
        .await
        .unwrap();
    for days_ago in 0..30_i64 {
        let day = (today - chrono::Duration::days(days_ago)).to_string();
        let gross = 500 * (1 + (days_ago * 7) % 11);
        pooled
            .conn()
            .execute(
                "INSERT INTO revenue_daily (local_day, target_kind, target_uid, location, time_zone, \
                 currency, gross, refunds, count) VALUES ($1, 'door', '7001', 'Paris', \
                 'Europe/Paris', 'eur', $2, $3, $4)",
                &[day.into(), gross.into(), (gross / 10).into(), (gross / 500).into()],
            )
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_is_accessible_and_photographed_at_laptop_and_phone_sizes() {
    let app = spawn_app(Backend::Sqlite).await;
    seed(&app).await;
    let admin = login(&app.database, Role::Admin).await;
    let pages = [
        ("dashboard", "/dashboard".to_string(), "Revenue today"),
        ("payments", "/dashboard/payments".to_string(), "Payments"),
        (
            "payment",
            format!("/dashboard/payments/{}", uuid_for(0)),
            "History",
        ),
        ("sessions", "/dashboard/sessions".to_string(), "History"),
        ("doors", "/dashboard/doors".to_string(), "7001"),
        (
            "door",
            "/dashboard/doors/7001".to_string(),
            "Download QR sticker",
        ),
        ("devices", "/dashboard/devices".to_string(), "sauna"),
        ("device", "/dashboard/devices/sauna".to_string(), "Relay ON"),
        ("audit", "/dashboard/audit".to_string(), "door_registered"),
        ("reports", "/dashboard/reports".to_string(), "Download CSV"),
        (
            "deliveries",
            "/dashboard/deliveries".to_string(),
            "Webhook deliveries",
        ),
    ];
    for (size, suffix) in [(LAPTOP, "1440"), (PHONE, "390")] {
        let browser = logged_in(&app, &admin, size).await;
        for (name, path, expected) in &pages {
            let url = format!("{}{path}", app.address);
            let mut shown = false;
            for _ in 0..50 {
                browser.open(&url).await;
                if browser.text().await.contains(expected) {
                    shown = true;
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            assert!(
                shown,
                "{path} never showed {expected:?}: {}",
                browser.text().await
            );
            browser.assert_accessible().await;
            browser
                .screenshot(&format!("dashboard-{name}-{suffix}"))
                .await;
        }
        browser.close().await;
    }
    app.stop().await;
}
