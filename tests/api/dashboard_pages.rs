//! The operator pages over HTTP: status, role rules and content of each page, and the
//! write actions going through the API's code paths (maintenance blocks checkout, force
//! end switches the relay OFF, auditors get 403).

use chrono::{Duration, Utc};
use latchkey::http::auth::Role;
use latchkey::projections_runtime::PooledConn;
use latchkey_aggregates::session::SessionState;
use latchkey_projections::Param;
use serde_json::json;

use crate::device_sessions::{pay, session_state, wait_for, world};
use crate::helpers::{spawn_app, Backend, TestApp, ADMIN_TOKEN};
use crate::on_both_backends;
use crate::sim_helpers::PLUG;

/// A logged-in dashboard session: its cookie and CSRF token.
pub(crate) struct Login {
    pub(crate) cookie: String,
    pub(crate) csrf: String,
}

/// A fully enrolled user with `role` and a logged-in session, made directly in the
/// accounts tables (the login flow itself is tested with the accounts).
pub(crate) async fn login(database: &latchkey::store::Database, role: Role) -> Login {
    use latchkey::accounts::{sessions, users, SessionStage};
    let email = format!(
        "{}-{}@example.com",
        role.as_str(),
        uuid::Uuid::new_v4().simple()
    );
    let user = users::create(database, &email, role, "not-a-password-hash", false)
        .await
        .unwrap();
    users::begin_totp(database, &user.user_id, "JBSWY3DPEHPK3PXP", None)
        .await
        .unwrap();
    users::confirm_totp(database, &user.user_id, 1, &[])
        .await
        .unwrap();
    let (cookie, session) = sessions::create(database, &user.user_id, SessionStage::Full)
        .await
        .unwrap();
    Login {
        cookie: format!("{}={cookie}", sessions::COOKIE_NAME),
        csrf: session.csrf_token,
    }
}

/// GET as `login`: the status and the body.
pub(crate) async fn page(app: &TestApp, path: &str, login: &Login) -> (u16, String) {
    let response = app
        .client
        .get(format!("{}{path}", app.address))
        .header("cookie", &login.cookie)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// GETs `path` until its body satisfies `ready` (projections catch up asynchronously);
/// the last body.
async fn page_until(
    app: &TestApp,
    path: &str,
    token: &Login,
    ready: impl Fn(&str) -> bool,
) -> String {
    let mut body = String::new();
    for _ in 0..200 {
        body = page(app, path, token).await.1;
        if ready(&body) {
            return body;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("{path} never showed what was expected; last body: {body}");
}

/// A form post as `login`, with its CSRF token.
pub(crate) async fn post_form(
    app: &TestApp,
    path: &str,
    login: &Login,
    form: &[(&str, &str)],
) -> reqwest::Response {
    let mut fields = form.to_vec();
    fields.push(("csrf_token", &login.csrf));
    app.client
        .post(format!("{}{path}", app.address))
        .header("cookie", &login.cookie)
        .form(&fields)
        .send()
        .await
        .unwrap()
}

/// A payments row as the payments fold writes it.
pub(crate) async fn insert_payment(
    app: &TestApp,
    id: &str,
    status: &str,
    door: &str,
    minutes_ago: i64,
) {
    let created = Utc::now() - Duration::minutes(minutes_ago);
    let paid = matches!(status, "succeeded" | "partially_refunded" | "refunded");
    let sql = "INSERT INTO payments (payment_id, kind, status, door_uid, amount, amount_received, \
               amount_refunded, amount_capturable, currency, email, failed_attempts, disputed, \
               created_at, succeeded_at, updated_at) \
               VALUES ($1, 'door', $2, $3, 500, $4, 0, 0, 'eur', $5, 0, $6, $7, $8, $7)";
    let params = [
        Param::from(id),
        status.into(),
        door.into(),
        Param::from(if paid { 500_i64 } else { 0 }),
        format!("guest{minutes_ago}@example.com").into(),
        false.into(),
        created.into(),
        Param::from(paid.then_some(created)),
    ];
    let mut pooled = PooledConn::acquire(&app.database).await.unwrap();
    pooled.conn().execute(sql, &params).await.unwrap();
}

pub(crate) fn uuid_for(n: usize) -> String {
    format!("00000000-0000-4000-8000-{n:012}")
}

async fn pages_need_a_caller_and_show_todays_figures_and_health(backend: Backend) {
    let app = spawn_app(backend).await;
    let response = app.get("/dashboard").await;
    assert_eq!(response.status(), 303, "no login, no dashboard");
    assert_eq!(response.headers()["location"], "/login?next=%2Fdashboard");
    let stranger = Login {
        cookie: "latchkey_session=forged".into(),
        csrf: String::new(),
    };
    assert_eq!(page(&app, "/dashboard", &stranger).await.0, 303);

    insert_payment(&app, &uuid_for(1), "succeeded", "d1", 1).await;
    insert_payment(&app, &uuid_for(2), "failed", "d1", 2).await;
    let slot = latchkey_projections::revenue::slot_start(Utc::now());
    let sql = "INSERT INTO revenue (slot_start, local_day, target_kind, target_uid, location, \
               time_zone, currency, gross, refunds, count) \
               VALUES ($1, $2, 'door', 'd1', 'Paris', 'UTC', 'eur', 1250, 250, 1)";
    let mut pooled = PooledConn::acquire(&app.database).await.unwrap();
    pooled
        .conn()
        .execute(sql, &[slot.into(), slot.date_naive().to_string().into()])
        .await
        .unwrap();
    drop(pooled);

    let auditor = login(&app.database, Role::Auditor).await;
    let (status, body) = page(&app, "/dashboard", &auditor).await;
    assert_eq!(status, 200);
    assert!(body.contains("Revenue today"), "{body}");
    assert!(body.contains("10.00"), "net of today: {body}");
    assert!(body.contains("12.50"), "gross of today");
    assert!(
        body.contains(r#"<p class="value" id="payments-today">2</p>"#),
        "{body}"
    );
    for module in ["stripe", "ttlock", "shelly"] {
        assert!(body.contains(&format!("<td>{module}</td>")), "{module}");
    }
    assert!(body.contains("not configured"));
    assert!(body.contains("light amber"), "not configured is amber");
    for projection in ["payments", "sessions", "audit_log", "revenue", "catalogue"] {
        assert!(
            body.contains(&format!("<td>{projection}</td>")),
            "{projection}"
        );
    }
    assert!(body.contains(r#"data-refresh="/dashboard/live""#));

    let (status, fragment) = page(&app, "/dashboard/live", &auditor).await;
    assert_eq!(status, 200);
    assert!(fragment.contains("Revenue today"));
    assert!(!fragment.contains("<html"), "the live part alone");
    app.stop().await;
}

async fn payments_are_filtered_paged_and_exported(backend: Backend) {
    let app = spawn_app(backend).await;
    for n in 0..60 {
        let (status, door) = if n % 12 == 0 {
            ("failed", "d2")
        } else {
            ("succeeded", "d1")
        };
        insert_payment(&app, &uuid_for(n), status, door, n as i64 + 1).await;
    }
    let auditor = login(&app.database, Role::Auditor).await;
    let (status, first) = page(&app, "/dashboard/payments", &auditor).await;
    assert_eq!(status, 200);
    assert_eq!(first.matches("href=\"/dashboard/payments/0000").count(), 50);
    assert!(first.contains(&uuid_for(0)[..8]), "newest first");
    let next = first
        .split("rel=\"next\" href=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a link to older payments")
        .replace("&amp;", "&");
    let (_, second) = page(&app, &next, &auditor).await;
    assert_eq!(
        second.matches("href=\"/dashboard/payments/0000").count(),
        10
    );
    assert!(!second.contains("rel=\"next\""), "the last page");

    let (_, failed) = page(
        &app,
        "/dashboard/payments?status=failed&door=&email=",
        &auditor,
    )
    .await;
    assert_eq!(
        failed.matches("href=\"/dashboard/payments/0000").count(),
        5,
        "blank filters are ignored"
    );
    let (status, bad) = page(&app, "/dashboard/payments?status=lost", &auditor).await;
    assert_eq!(status, 422);
    assert!(bad.contains("status must be one of"), "{bad}");

    let response = app
        .client
        .get(format!("{}/dashboard/payments.csv", app.address))
        .header("cookie", &auditor.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let csv = response.text().await.unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 61, "header and every payment");
    assert!(lines[0].starts_with("payment_id,created_at,status"));
    let (_, failed_csv) = page(&app, "/dashboard/payments.csv?status=failed", &auditor).await;
    assert_eq!(failed_csv.lines().count(), 6);
    assert!(failed_csv
        .lines()
        .skip(1)
        .all(|line| line.contains(",failed,")));
    app.stop().await;
}

async fn only_admins_get_the_refund_form_and_endpoint(backend: Backend) {
    let app = spawn_app(backend).await;
    let id = uuid_for(7);
    insert_payment(&app, &id, "succeeded", "d1", 5).await;
    let path = format!("/dashboard/payments/{id}");
    let refund = format!("{path}/refund");
    let auditor = login(&app.database, Role::Auditor).await;
    let operator = login(&app.database, Role::Operator).await;
    let admin = login(&app.database, Role::Admin).await;

    let (status, body) = page(&app, &path, &auditor).await;
    assert_eq!(status, 200);
    assert!(body.contains("History"));
    assert!(
        !body.contains("refund-button"),
        "auditors see no refund button"
    );
    let (_, body) = page(&app, &path, &operator).await;
    assert!(!body.contains("refund-button"), "operators neither");
    let (_, body) = page(&app, &path, &admin).await;
    assert!(body.contains("refund-button"), "admins do");

    for token in [&auditor, &operator] {
        let response = post_form(
            &app,
            &refund,
            token,
            &[("amount", "1.00"), ("confirm", "yes")],
        )
        .await;
        assert_eq!(response.status(), 403);
    }
    let response = post_form(&app, &refund, &admin, &[("amount", "1.50")]).await;
    assert_eq!(response.status(), 200);
    let body = response.text().await.unwrap();
    assert!(
        body.contains("Confirm the refund"),
        "a confirmation step first"
    );
    assert!(body.contains("1.50"));
    assert!(body.contains(r#"name="confirm" value="yes""#));
    let response = post_form(
        &app,
        &refund,
        &admin,
        &[("amount", "1.50"), ("confirm", "yes")],
    )
    .await;
    assert_eq!(
        response.status(),
        503,
        "the API's own refusal: Stripe is not configured here"
    );
    assert!(response.text().await.unwrap().contains("STRIPE_SECRET_KEY"));
    let response = post_form(&app, &refund, &admin, &[("amount", "-3")]).await;
    assert_eq!(response.status(), 422);
    app.stop().await;
}

async fn an_operator_force_ends_a_session_from_the_page_and_the_relay_goes_off(backend: Backend) {
    let world = world(backend).await;
    let app = &world.app;
    let payment_id = pay(&world).await;
    assert!(
        wait_for(|| async {
            session_state(&world, payment_id).await == Some(SessionState::Active)
        })
        .await,
        "the session starts"
    );
    assert!(
        world.sims.shelly.relay(PLUG, 0).unwrap().output,
        "the relay is ON"
    );
    let session = payment_id.to_string();
    let operator = login(&app.database, Role::Operator).await;
    let auditor = login(&app.database, Role::Auditor).await;
    let listed = page_until(app, "/dashboard/sessions", &operator, |body| {
        body.contains(&session[..8]) && body.contains("data-ends-at=")
    })
    .await;
    assert!(listed.contains("Force end"));
    assert!(
        listed.contains("data-ends-at="),
        "a countdown the script can run"
    );
    let (_, as_auditor) = page(app, "/dashboard/sessions", &auditor).await;
    assert!(
        !as_auditor.contains("Force end"),
        "auditors get no force-end control"
    );

    // The dashboard shows Shelly's health: red with the last error while failing.
    app.state.gateways.current().health[2].record_error(&"Shelly cloud timed out");
    let (_, dashboard) = page(app, "/dashboard", &auditor).await;
    assert!(dashboard.contains("light red"));
    assert!(dashboard.contains("Shelly cloud timed out"));

    let action = format!("/dashboard/sessions/{session}/force-end");
    assert_eq!(
        post_form(app, &action, &auditor, &[("reason", "x")])
            .await
            .status(),
        403
    );
    assert_eq!(
        post_form(app, &action, &operator, &[("reason", " ")])
            .await
            .status(),
        422
    );
    let response = post_form(
        app,
        &action,
        &operator,
        &[("reason", "guest asked to stop")],
    )
    .await;
    assert_eq!(response.status(), 303);
    assert!(
        wait_for(|| async { !world.sims.shelly.relay(PLUG, 0).unwrap().output }).await,
        "the relay goes OFF"
    );
    assert_eq!(
        session_state(&world, payment_id).await,
        Some(SessionState::ForceEnded)
    );
    let relay = world.sims.shelly.relay(PLUG, 0).unwrap();
    let log = serde_json::to_value(&relay).unwrap()["log"].clone();
    let last = log.as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["on"], false, "{log}");
    page_until(
        app,
        "/dashboard/sessions?state=force_ended",
        &auditor,
        |body| body.contains("guest asked to stop"),
    )
    .await;
    world.app.stop().await;
}

async fn maintenance_from_the_door_page_blocks_checkout(backend: Backend) {
    let app = spawn_app(backend).await;
    let door = json!({"uid": "4242", "name": "Front", "location": "Paris", "time_zone": "Europe/Paris",
                      "price": 500, "currency": "eur", "access_minutes": 60});
    assert_eq!(
        app.post_json("/api/doors", Some(ADMIN_TOKEN), &door)
            .await
            .status(),
        201
    );
    let operator = login(&app.database, Role::Operator).await;
    let auditor = login(&app.database, Role::Auditor).await;
    let body = page_until(&app, "/dashboard/doors/4242", &operator, |body| {
        body.contains("maintenance-toggle")
    })
    .await;
    assert!(
        body.contains("/api/doors/4242/qr.svg"),
        "QR sticker download"
    );
    let (status, as_auditor) = page(&app, "/dashboard/doors/4242", &auditor).await;
    assert_eq!(status, 200);
    assert!(!as_auditor.contains("maintenance-toggle"));
    let form = [("status", "maintenance"), ("reason", "lock replaced")];
    let without_token = app
        .client
        .post(format!("{}/dashboard/doors/4242/status", app.address))
        .header("cookie", &operator.cookie)
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(without_token.status(), 403, "a form without the CSRF token");
    assert_eq!(
        post_form(&app, "/dashboard/doors/4242/status", &auditor, &form)
            .await
            .status(),
        403
    );
    let response = post_form(&app, "/dashboard/doors/4242/status", &operator, &form).await;
    assert_eq!(response.status(), 303);
    let checkout = app
        .post_json(
            "/api/checkout/door/4242",
            None,
            &json!({"email": "guest@example.com"}),
        )
        .await;
    assert_eq!(
        checkout.status(),
        409,
        "a door in maintenance takes no payment"
    );

    let edit = [
        ("name", "Front door"),
        ("price", "7.50"),
        ("access_minutes", "90"),
    ];
    assert_eq!(
        post_form(&app, "/dashboard/doors/4242", &operator, &edit)
            .await
            .status(),
        303
    );
    page_until(&app, "/dashboard/doors", &auditor, |body| {
        body.contains("Front door") && body.contains("7.50")
    })
    .await;
    let (status, missing) = page(&app, "/dashboard/doors/9999", &auditor).await;
    assert_eq!(status, 404, "{missing}");
    app.stop().await;
}

async fn device_plans_are_edited_from_the_page(backend: Backend) {
    let app = spawn_app(backend).await;
    let device = json!({"uid": "dryer", "name": "Dryer", "location": "Lyon", "time_zone": "Europe/Paris",
        "shelly_device_id": "shelly-1", "shelly_channel": 0,
        "plans": [{"plan_id": "p30", "name": "30 minutes", "minutes": 30, "price": 300, "currency": "eur"}]});
    assert_eq!(
        app.post_json("/api/devices", Some(ADMIN_TOKEN), &device)
            .await
            .status(),
        201
    );
    let operator = login(&app.database, Role::Operator).await;
    let form = [(
        "plans",
        "p30, 30 minutes, 30, 3.00, eur\np60, 1 hour, 60, 5.00, eur",
    )];
    assert_eq!(
        post_form(&app, "/dashboard/devices/dryer", &operator, &form)
            .await
            .status(),
        303
    );
    let body = page_until(&app, "/dashboard/devices/dryer", &operator, |body| {
        body.contains("1 hour")
    })
    .await;
    assert!(body.contains("Relay ON") && body.contains("Relay OFF"));
    let bad = [("plans", "p60, 1 hour, sixty, 5.00, eur")];
    let response = post_form(&app, "/dashboard/devices/dryer", &operator, &bad).await;
    assert_eq!(response.status(), 422);
    assert!(response.text().await.unwrap().contains("line 1"));
    app.stop().await;
}

async fn the_audit_log_links_entries_and_reports_chart_revenue(backend: Backend) {
    let app = spawn_app(backend).await;
    let door = json!({"uid": "77", "name": "Gate", "location": "Paris", "time_zone": "UTC",
                      "price": 500, "currency": "eur", "access_minutes": 60});
    assert_eq!(
        app.post_json("/api/doors", Some(ADMIN_TOKEN), &door)
            .await
            .status(),
        201
    );
    let auditor = login(&app.database, Role::Auditor).await;
    let body = page_until(
        &app,
        "/dashboard/audit?actor=operator:bootstrap",
        &auditor,
        |body| body.contains("<td>door_registered</td>"),
    )
    .await;
    assert!(
        body.contains(r#"href="/dashboard/doors/77""#),
        "the entry links to its door: {body}"
    );
    let (_, none) = page(&app, "/dashboard/audit?actor=operator:nobody", &auditor).await;
    assert!(none.contains("No entries match"));

    let today = Utc::now().date_naive();
    for (days_ago, gross) in [(0_i64, 1500_i64), (2, 500)] {
        let day = (today - Duration::days(days_ago)).to_string();
        let sql = "INSERT INTO revenue_daily (local_day, target_kind, target_uid, location, \
                   time_zone, currency, gross, refunds, count) \
                   VALUES ($1, 'door', '77', 'Paris', 'UTC', 'eur', $2, 0, 1)";
        let mut pooled = PooledConn::acquire(&app.database).await.unwrap();
        pooled
            .conn()
            .execute(sql, &[day.into(), gross.into()])
            .await
            .unwrap();
    }
    let (status, report) = page(&app, "/dashboard/reports", &auditor).await;
    assert_eq!(status, 200);
    assert!(report.contains("<svg"), "a chart");
    assert!(report.contains("<title id="), "an accessible chart");
    assert_eq!(
        report.matches("<rect ").count(),
        2,
        "one bar per day with revenue"
    );
    assert!(report.contains("15.00") && report.contains(&today.to_string()));
    let (_, empty) = page(
        &app,
        "/dashboard/reports?from=2020-01-01&to=2020-01-31",
        &auditor,
    )
    .await;
    assert!(empty.contains("No revenue between 2020-01-01 and 2020-01-31"));
    assert!(!empty.contains("<svg"));
    let (_, csv) = page(&app, "/dashboard/reports.csv?group_by=door", &auditor).await;
    assert_eq!(
        csv,
        "bucket,gross_minor,refunds_minor,disputes_minor,net_minor,count,currency\n77,2000,0,0,2000,2,eur\n"
    );
    let (status, _) = page(&app, "/dashboard/reports?group_by=year", &auditor).await;
    assert_eq!(status, 422);
    app.stop().await;
}

on_both_backends!(
    pages_need_a_caller_and_show_todays_figures_and_health,
    payments_are_filtered_paged_and_exported,
    only_admins_get_the_refund_form_and_endpoint,
    an_operator_force_ends_a_session_from_the_page_and_the_relay_goes_off,
    maintenance_from_the_door_page_blocks_checkout,
    device_plans_are_edited_from_the_page,
    the_audit_log_links_entries_and_reports_chart_revenue,
);
