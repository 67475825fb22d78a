//! The read API over HTTP: roles, filters and their 422s, keyset pagination under
//! concurrent inserts, revenue buckets in local time, aggregate state at a time, and the
//! OpenAPI document.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Duration as Span, TimeZone, Utc};
use cqrs_es::Aggregate;
use latchkey::http::auth::{create_token, Role};
use latchkey_aggregates::door::DoorCommand;
use latchkey_aggregates::payment::{Payment, PaymentCommand, PaymentTarget, StripeEventRef};
use latchkey_aggregates::session::services::RelayTarget;
use latchkey_aggregates::session::{SessionCommand, SessionTerms};
use latchkey_aggregates::Actor;
use serde_json::Value;
use uuid::Uuid;

use crate::helpers::{eventually, Backend, TestApp};
use crate::history::{money, pay, Buses};
use crate::on_both_backends;
use crate::projections::{cli, spawn_read_app, wait_for_projections};

/// The read routes, with query strings that make each one answer 200.
fn read_routes(payment_id: Uuid) -> Vec<String> {
    vec![
        "/api/payments".to_owned(),
        format!("/api/payments/{payment_id}"),
        "/api/sessions?state=active".to_owned(),
        "/api/doors".to_owned(),
        "/api/devices".to_owned(),
        "/api/audit".to_owned(),
        "/api/reports/revenue?from=2026-11-01&to=2026-11-30".to_owned(),
        "/api/events".to_owned(),
        format!("/api/aggregates/Payment/{payment_id}"),
        "/api/verify".to_owned(),
    ]
}

async fn get_with(app: &TestApp, token: &str, path: &str) -> reqwest::Response {
    app.client
        .get(format!("{}{path}", app.address))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

async fn json(app: &TestApp, token: &str, path: &str) -> Value {
    let response = get_with(app, token, path).await;
    assert_eq!(response.status(), 200, "GET {path}");
    response.json().await.unwrap()
}

async fn auditor(app: &TestApp) -> String {
    create_token(&app.database, Role::Auditor, "auditor")
        .await
        .unwrap()
}

fn door(uid: &str, location: &str, time_zone: &str, price: i64, currency: &str) -> DoorCommand {
    DoorCommand::RegisterDoor {
        door_uid: uid.to_owned(),
        lock_id: 7,
        name: format!("Door {uid}"),
        location: location.to_owned(),
        time_zone: time_zone.to_owned(),
        price: money(price, currency),
        access_minutes: 60,
        actor: Actor::operator("token:ops"),
        at: Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap(),
    }
}

async fn register(buses: &Buses, uid: &str, command: DoorCommand) {
    let metadata = latchkey::cqrs::CommandMetadata::new("operator:token:ops", "test");
    buses.doors.execute(uid, command, metadata).await.unwrap();
}

/// Starts a door checkout at `at`; returns the payment id.
async fn checkout(
    buses: &Buses,
    door_uid: &str,
    price: i64,
    currency: &str,
    at: DateTime<Utc>,
) -> Uuid {
    let id = Uuid::new_v4();
    let command = PaymentCommand::StartCheckout {
        payment_id: id,
        target: PaymentTarget::Door {
            door_uid: door_uid.to_owned(),
        },
        price: money(price, currency),
        guest_email: "guest@example.com".to_owned(),
        actor: Actor::Guest,
        at,
        offer: None,
    };
    pay(&buses.payments, id, command).await;
    id
}

fn stripe_event(at: DateTime<Utc>) -> StripeEventRef {
    StripeEventRef {
        id: format!("evt_{}", Uuid::new_v4().simple()),
        created: at,
    }
}

/// Stripe reports the success at `at` (its event time).
async fn succeed(buses: &Buses, id: Uuid, amount: i64, currency: &str, at: DateTime<Utc>) {
    let command = PaymentCommand::ConfirmPayment {
        payment_intent_id: format!("pi_{id}"),
        charge_id: Some(format!("ch_{id}")),
        amount_received: money(amount, currency),
        stripe_event: stripe_event(at),
        actor: Actor::Stripe,
        at: at + Span::minutes(2),
    };
    pay(&buses.payments, id, command).await;
}

/// Stripe reports a cumulative refunded total at `at`.
async fn refund(buses: &Buses, id: Uuid, total: i64, currency: &str, at: DateTime<Utc>) {
    let command = PaymentCommand::RecordRefund {
        payment_intent_id: Some(format!("pi_{id}")),
        charge_id: format!("ch_{id}"),
        amount_refunded: money(total, currency),
        refund_request_id: None,
        stripe_event: stripe_event(at),
        actor: Actor::Stripe,
        at: at + Span::minutes(2),
    };
    pay(&buses.payments, id, command).await;
}

async fn every_read_route_needs_a_token_and_an_auditor_may_read(backend: Backend) {
    let app = spawn_read_app(backend).await;
    let buses = Buses::new(&app.database, &app.appended);
    register(
        &buses,
        "d1",
        door("d1", "Paris", "Europe/Paris", 500, "eur"),
    )
    .await;
    let id = checkout(&buses, "d1", 500, "eur", Utc::now()).await;
    wait_for_projections(&app.database).await;
    let token = auditor(&app).await;
    for path in read_routes(id) {
        let response = app.get(&path).await;
        assert_eq!(response.status(), 401, "GET {path} without a token");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unauthenticated");
        let response = get_with(&app, "lk_not_a_token", &path).await;
        assert_eq!(response.status(), 401, "GET {path} with a bad token");
        assert_eq!(
            get_with(&app, &token, &path).await.status(),
            200,
            "GET {path} as auditor"
        );
    }
    let missing = Uuid::new_v4();
    for path in [
        format!("/api/payments/{missing}"),
        format!("/api/aggregates/Payment/{missing}"),
        format!("/api/aggregates/Spaceship/{id}"),
    ] {
        let response = get_with(&app, &token, &path).await;
        assert_eq!(response.status(), 404, "GET {path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "not_found");
    }
    let detail = json(&app, &token, &format!("/api/payments/{id}")).await;
    assert_eq!(detail["payment_id"], id.to_string());
    assert_eq!(detail["status"], "pending");
    assert_eq!(detail["events"][0]["event_type"], "CheckoutStarted");
    let doors = json(&app, &token, "/api/doors").await;
    assert_eq!(doors["items"][0]["uid"], "d1");
    assert_eq!(doors["items"][0]["time_zone"], "Europe/Paris");
    let verify = json(&app, &token, "/api/verify").await;
    assert_eq!(verify["ok"], true);
    assert_eq!(verify["events_checked"], 2);
    let lag_reported = eventually(50, Duration::from_millis(100), || async {
        let metrics = app.metrics().await.text().await.unwrap();
        metrics.contains("latchkey_projection_lag_events{projection=\"payments\"} 0")
            && metrics.contains("latchkey_projection_position{projection=\"payments\"} 2")
    })
    .await;
    assert!(
        lag_reported,
        "{}",
        app.metrics().await.text().await.unwrap()
    );
    app.stop().await;
}

async fn bad_filter_values_are_422_naming_the_parameter(backend: Backend) {
    let app = spawn_read_app(backend).await;
    let token = auditor(&app).await;
    let cases = [
        ("/api/payments?limit=0", "limit"),
        ("/api/payments?limit=201", "limit"),
        ("/api/payments?limit=ten", "limit"),
        ("/api/payments?status=paid", "status"),
        ("/api/payments?kind=car", "kind"),
        ("/api/payments?from=yesterday", "from"),
        ("/api/payments?to=2026-13-01", "to"),
        ("/api/payments?cursor=zz", "cursor"),
        ("/api/payments?email=", "email"),
        ("/api/sessions?state=running", "state"),
        ("/api/audit?action=payment_done", "action"),
        ("/api/audit?cursor=00", "cursor"),
        ("/api/events?after=-1", "after"),
        ("/api/events?after=first", "after"),
        ("/api/reports/revenue?to=2026-11-30", "from"),
        ("/api/reports/revenue?from=2026-11-01&to=2026-10-01", "to"),
        (
            "/api/reports/revenue?from=2026-11-01&to=2026-11-30&group_by=year",
            "group_by",
        ),
        (
            "/api/reports/revenue?from=2026-11-01&to=2026-11-30&tz=Mars/Olympus",
            "tz",
        ),
        (
            "/api/reports/revenue?from=2026-11-01&to=2026-11-30&format=xml",
            "format",
        ),
        ("/api/aggregates/Payment/x?at=noon", "at"),
    ];
    for (path, parameter) in cases {
        let response = get_with(&app, &token, path).await;
        assert_eq!(response.status(), 422, "GET {path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "invalid");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(parameter), "GET {path}: {message}");
    }
    let response = get_with(&app, &token, "/api/payments?status=pending&status=failed").await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "bad_request");
    app.stop().await;
}

async fn paging_payments_while_others_are_inserted_returns_each_old_one_once(backend: Backend) {
    let app = spawn_read_app(backend).await;
    let buses = Buses::new(&app.database, &app.appended);
    register(
        &buses,
        "d1",
        door("d1", "Paris", "Europe/Paris", 500, "eur"),
    )
    .await;
    let base = Utc.with_ymd_and_hms(2026, 11, 20, 8, 0, 0).unwrap();
    let mut old = HashSet::new();
    for index in 0..60 {
        // Some share a creation time, so the payment id breaks the tie.
        old.insert(
            checkout(&buses, "d1", 500, "eur", base + Span::minutes(index / 3))
                .await
                .to_string(),
        );
    }
    wait_for_projections(&app.database).await;
    let token = auditor(&app).await;

    let inserter = {
        let database = app.database.clone();
        let appended = app.appended.clone();
        tokio::spawn(async move {
            let buses = Buses::new(&database, &appended);
            let mut created = Vec::new();
            for index in 0..40 {
                // New payments land before, among and after the old ones.
                let at = base + Span::minutes(index % 25 - 2) + Span::seconds(30);
                created.push(checkout(&buses, "d1", 500, "eur", at).await.to_string());
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            created
        })
    };
    let mut seen: HashMap<String, u32> = HashMap::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            None => "/api/payments?limit=7&door=d1".to_owned(),
            Some(cursor) => format!("/api/payments?limit=7&door=d1&cursor={cursor}"),
        };
        let page = json(&app, &token, &path).await;
        let items = page["items"].as_array().unwrap();
        let mut previous: Option<(String, String)> = None;
        for item in items {
            let key = (
                item["created_at"].as_str().unwrap().to_owned(),
                item["payment_id"].as_str().unwrap().to_owned(),
            );
            if let Some(previous) = &previous {
                assert!(key < *previous, "newest first");
            }
            previous = Some(key);
            *seen
                .entry(item["payment_id"].as_str().unwrap().to_owned())
                .or_default() += 1;
        }
        pages += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    let created = inserter.await.unwrap();
    assert!(pages >= 9);
    for id in &old {
        assert_eq!(
            seen.get(id),
            Some(&1),
            "old payment {id} seen {:?} times",
            seen.get(id)
        );
    }
    assert!(
        seen.values().all(|count| *count == 1),
        "a payment was listed twice"
    );
    assert!(seen
        .keys()
        .all(|id| old.contains(id) || created.contains(id)));

    // Filters narrow the list; a filter that matches nothing gives an empty last page.
    let page = json(&app, &token, "/api/payments?status=succeeded").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 0);
    assert!(page["next_cursor"].is_null());
    let page = json(
        &app,
        &token,
        "/api/payments?from=2026-11-20T08:05:00Z&to=2026-11-20T08:10:00Z&limit=200",
    )
    .await;
    let items = page["items"].as_array().unwrap();
    assert!(items.iter().all(|item| {
        let at: DateTime<Utc> = item["created_at"].as_str().unwrap().parse().unwrap();
        at >= base + Span::minutes(5) && at < base + Span::minutes(10)
    }));
    assert!(items.len() >= 15);
    app.stop().await;
}

async fn revenue_is_bucketed_by_local_day_with_refunds_on_their_own_day(backend: Backend) {
    let app = spawn_read_app(backend).await;
    let buses = Buses::new(&app.database, &app.appended);
    register(
        &buses,
        "paris",
        door("paris", "Paris Marais", "Europe/Paris", 1000, "eur"),
    )
    .await;
    register(
        &buses,
        "london",
        door("london", "London", "Europe/London", 800, "gbp"),
    )
    .await;
    let utc = |d, h, m| Utc.with_ymd_and_hms(2026, 11, d, h, m, 0).unwrap();
    // Paris is UTC+1 in November: 22:30Z is 23:30 on the 23rd, 23:30Z is 00:30 on the 24th.
    let late_evening = checkout(&buses, "paris", 1000, "eur", utc(23, 22, 0)).await;
    succeed(&buses, late_evening, 1000, "eur", utc(23, 22, 30)).await;
    let after_midnight = checkout(&buses, "paris", 1000, "eur", utc(23, 23, 0)).await;
    succeed(&buses, after_midnight, 1000, "eur", utc(23, 23, 30)).await;
    refund(&buses, late_evening, 400, "eur", utc(24, 9, 0)).await;
    let pounds = checkout(&buses, "london", 800, "gbp", utc(23, 11, 0)).await;
    succeed(&buses, pounds, 800, "gbp", utc(23, 12, 0)).await;
    // Cumulative totals: 300 on the 25th, then 800 in all (500 more) on the 26th.
    refund(&buses, pounds, 300, "gbp", utc(25, 10, 0)).await;
    refund(&buses, pounds, 800, "gbp", utc(26, 10, 0)).await;
    wait_for_projections(&app.database).await;
    let token = auditor(&app).await;

    let rows = |report: Value| -> Vec<(String, i64, i64, i64, i64, String)> {
        report["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| {
                (
                    row["bucket"].as_str().unwrap().to_owned(),
                    row["gross"].as_i64().unwrap(),
                    row["refunds"].as_i64().unwrap(),
                    row["net"].as_i64().unwrap(),
                    row["count"].as_i64().unwrap(),
                    row["currency"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let row = |bucket: &str, gross, refunds, net, count, currency: &str| {
        (
            bucket.to_owned(),
            gross,
            refunds,
            net,
            count,
            currency.to_owned(),
        )
    };
    let report = json(
        &app,
        &token,
        "/api/reports/revenue?from=2026-11-01&to=2026-11-30",
    )
    .await;
    assert_eq!(
        rows(report),
        vec![
            row("2026-11-23", 1000, 0, 1000, 1, "eur"),
            row("2026-11-23", 800, 0, 800, 1, "gbp"),
            row("2026-11-24", 1000, 400, 600, 1, "eur"),
            row("2026-11-25", 0, 300, -300, 0, "gbp"),
            row("2026-11-26", 0, 500, -500, 0, "gbp"),
        ]
    );
    // The same facts with every day boundary in UTC: the 00:30 payment moves to the 23rd.
    let report = json(
        &app,
        &token,
        "/api/reports/revenue?from=2026-11-23&to=2026-11-24&tz=UTC",
    )
    .await;
    assert_eq!(
        rows(report),
        vec![
            row("2026-11-23", 2000, 0, 2000, 2, "eur"),
            row("2026-11-23", 800, 0, 800, 1, "gbp"),
            row("2026-11-24", 0, 400, -400, 0, "eur"),
        ]
    );
    let report = json(
        &app,
        &token,
        "/api/reports/revenue?from=2026-11-24&to=2026-11-24",
    )
    .await;
    assert_eq!(
        rows(report),
        vec![row("2026-11-24", 1000, 400, 600, 1, "eur")]
    );
    let report = json(
        &app,
        &token,
        "/api/reports/revenue?from=2026-11-01&to=2026-11-30&group_by=door",
    )
    .await;
    assert_eq!(
        rows(report),
        vec![
            row("london", 800, 800, 0, 1, "gbp"),
            row("paris", 2000, 400, 1600, 2, "eur")
        ]
    );
    let report = json(
        &app,
        &token,
        "/api/reports/revenue?from=2026-11-01&to=2026-11-30&group_by=location",
    )
    .await;
    assert_eq!(
        rows(report),
        vec![
            row("London", 800, 800, 0, 1, "gbp"),
            row("Paris Marais", 2000, 400, 1600, 2, "eur")
        ]
    );
    let report = json(
        &app,
        &token,
        "/api/reports/revenue?from=2026-11-01&to=2026-11-30&group_by=week",
    )
    .await;
    assert_eq!(
        rows(report),
        vec![
            row("2026-W48", 2000, 400, 1600, 2, "eur"),
            row("2026-W48", 800, 800, 0, 1, "gbp")
        ]
    );
    let report = json(
        &app,
        &token,
        "/api/reports/revenue?from=2026-11-01&to=2026-11-30&group_by=month",
    )
    .await;
    assert_eq!(
        rows(report),
        vec![
            row("2026-11", 2000, 400, 1600, 2, "eur"),
            row("2026-11", 800, 800, 0, 1, "gbp")
        ]
    );
    let report = json(
        &app,
        &token,
        "/api/reports/revenue?from=2026-11-01&to=2026-11-30&group_by=device",
    )
    .await;
    assert!(rows(report).is_empty());

    let response = get_with(
        &app,
        &token,
        "/api/reports/revenue?from=2026-11-01&to=2026-11-30&group_by=month&format=csv",
    )
    .await;
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    assert_eq!(
        response.text().await.unwrap(),
        "bucket,gross_minor,refunds_minor,disputes_minor,net_minor,count,currency\n2026-11,2000,400,0,1600,2,eur\n2026-11,800,800,0,0,1,gbp\n"
    );
    app.stop().await;
}

async fn aggregate_state_at_a_time_replays_the_events_recorded_by_then(backend: Backend) {
    let app = spawn_read_app(backend).await;
    let buses = Buses::new(&app.database, &app.appended);
    let token = auditor(&app).await;
    register(
        &buses,
        "d1",
        door("d1", "Paris", "Europe/Paris", 500, "eur"),
    )
    .await;
    let id = checkout(&buses, "d1", 500, "eur", Utc::now()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let between = Utc::now();
    tokio::time::sleep(Duration::from_millis(300)).await;
    succeed(&buses, id, 500, "eur", Utc::now()).await;
    refund(&buses, id, 200, "eur", Utc::now()).await;

    let journal = latchkey::store::journal::Journal::new(app.database.clone());
    let expected_at = |at: Option<DateTime<Utc>>| {
        let journal = journal.clone();
        async move {
            let events = journal
                .aggregate_events("Payment", &id.to_string(), at)
                .await
                .unwrap();
            let mut payment = Payment::default();
            for event in &events {
                payment.apply(serde_json::from_value(event.payload.clone()).unwrap());
            }
            (
                events.len(),
                serde_json::to_value(&payment).unwrap(),
                payment,
            )
        }
    };
    let at = between.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let state = json(
        &app,
        &token,
        &format!("/api/aggregates/Payment/{id}?at={at}"),
    )
    .await;
    let (count, expected, payment) = expected_at(Some(between)).await;
    assert_eq!(count, 1);
    assert_eq!(payment.status().as_str(), "pending");
    assert_eq!(state["events_applied"], 1);
    assert_eq!(state["version"], 1);
    assert_eq!(state["state"], expected);

    let state = json(&app, &token, &format!("/api/aggregates/Payment/{id}")).await;
    let (count, expected, payment) = expected_at(None).await;
    assert_eq!(count, 3);
    assert_eq!(payment.status().as_str(), "partially_refunded");
    assert_eq!(state["events_applied"], 3);
    assert_eq!(state["state"], expected);

    let before_anything = "2000-01-01T00:00:00Z";
    let response = get_with(
        &app,
        &token,
        &format!("/api/aggregates/Payment/{id}?at={before_anything}"),
    )
    .await;
    assert_eq!(response.status(), 404);

    // The CLI answers the same.
    let output = cli(
        app.test_database.url.as_str(),
        &["replay", "Payment", &id.to_string(), "--at", &at],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let replayed: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(replayed["state"], expected_at(Some(between)).await.1);
    let output = cli(
        app.test_database.url.as_str(),
        &["replay", "Spaceship", "x"],
    );
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("unknown aggregate type"));
    app.stop().await;
}

async fn sessions_audit_and_journal_read_as_documented(backend: Backend) {
    let app = spawn_read_app(backend).await;
    let buses = Buses::new(&app.database, &app.appended);
    let token = auditor(&app).await;
    register(
        &buses,
        "d1",
        door("d1", "Paris", "Europe/Paris", 500, "eur"),
    )
    .await;
    let payment = checkout(&buses, "d1", 500, "eur", Utc::now()).await;
    let session = Uuid::new_v4();
    let terms = SessionTerms {
        session_id: session,
        payment_id: payment,
        device_uid: "washer-1".to_owned(),
        relay: RelayTarget {
            shelly_device_id: "shelly-1".to_owned(),
            channel: 0,
        },
        plan_id: "p30".to_owned(),
        plan_minutes: 30,
        grace_seconds: 120,
    };
    let metadata = || latchkey::cqrs::CommandMetadata::new("system", "test");
    let now = Utc::now();
    let open = SessionCommand::OpenSession {
        terms,
        actor: Actor::System,
        at: now,
    };
    buses
        .sessions
        .execute(&session.to_string(), open, metadata())
        .await
        .unwrap();
    let on = SessionCommand::SwitchRelayOn {
        actor: Actor::System,
        at: now,
    };
    buses
        .sessions
        .execute(&session.to_string(), on, metadata())
        .await
        .unwrap();
    wait_for_projections(&app.database).await;

    let sessions = json(&app, &token, "/api/sessions?state=active").await;
    let items = sessions["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["session_id"], session.to_string());
    assert_eq!(items[0]["relay_commanded"], true);
    assert_eq!(items[0]["relay_observed"], true);
    let remaining = items[0]["remaining_seconds"].as_i64().unwrap();
    assert!((1_700..=1_800).contains(&remaining), "{remaining}");
    let sessions = json(&app, &token, "/api/sessions?state=completed").await;
    assert_eq!(sessions["items"].as_array().unwrap().len(), 0);

    // Audit: newest first, filtered, paginated by position.
    let audit = json(
        &app,
        &token,
        &format!("/api/audit?aggregate_id={session}&limit=2"),
    )
    .await;
    let first: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(first, ["session_activated", "shelly_on_success"]);
    let cursor = audit["next_cursor"].as_str().unwrap();
    let audit = json(
        &app,
        &token,
        &format!("/api/audit?aggregate_id={session}&limit=2&cursor={cursor}"),
    )
    .await;
    let second: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(second, ["shelly_on_requested", "session_opened"]);
    let audit = json(&app, &token, "/api/audit?action=payment_started").await;
    let entry = &audit["items"][0];
    assert_eq!(entry["aggregate_type"], "Payment");
    assert_eq!(entry["actor"], "guest");
    assert_eq!(entry["details"]["guest_email"], "guest@example.com");
    let audit = json(&app, &token, "/api/audit?from=2000-01-01&to=2000-01-02").await;
    assert_eq!(audit["items"].as_array().unwrap().len(), 0);

    // The journal in global order, paged by position.
    let page = json(&app, &token, "/api/events?limit=2").await;
    let positions: Vec<i64> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["position"].as_i64().unwrap())
        .collect();
    assert_eq!(positions, [1, 2]);
    assert_eq!(page["items"][0]["event_type"], "DoorRegistered");
    assert_eq!(page["next_cursor"], "2");
    let page = json(&app, &token, "/api/events?after=2&limit=200").await;
    let items = page["items"].as_array().unwrap();
    assert_eq!(items[0]["position"], 3);
    assert!(page["next_cursor"].is_null());
    let page = json(
        &app,
        &token,
        &format!("/api/events?aggregate_type=DeviceSession&aggregate_id={session}"),
    )
    .await;
    assert_eq!(page["items"].as_array().unwrap().len(), 4);
    app.stop().await;
}

async fn the_openapi_document_is_openapi_3_and_lists_every_read_route(backend: Backend) {
    let app = spawn_read_app(backend).await;
    let response = app.get("/api/openapi.json").await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    let document: Value = serde_json::from_str(&text).unwrap();
    assert!(document["openapi"].as_str().unwrap().starts_with("3."));
    let parsed: utoipa::openapi::OpenApi =
        serde_json::from_str(&text).expect("a valid OpenAPI document");
    for path in [
        "/api/payments",
        "/api/payments/{id}",
        "/api/sessions",
        "/api/doors",
        "/api/devices",
        "/api/audit",
        "/api/reports/revenue",
        "/api/events",
        "/api/aggregates/{aggregate_type}/{id}",
        "/api/verify",
    ] {
        let item = parsed
            .paths
            .paths
            .get(path)
            .unwrap_or_else(|| panic!("{path} is not documented"));
        assert!(item.get.is_some(), "GET {path} is not documented");
        assert!(document["paths"][path]["get"]["security"][0]
            .get("bearer")
            .is_some());
    }
    assert!(document["components"]["securitySchemes"]["bearer"].is_object());
    // Every schema reference resolves.
    let schemas = document["components"]["schemas"].as_object().unwrap();
    for reference in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = &reference[..reference.find('"').unwrap()];
        assert!(schemas.contains_key(name), "dangling reference to {name}");
    }
    app.stop().await;
}

on_both_backends!(
    every_read_route_needs_a_token_and_an_auditor_may_read,
    bad_filter_values_are_422_naming_the_parameter,
    paging_payments_while_others_are_inserted_returns_each_old_one_once,
    revenue_is_bucketed_by_local_day_with_refunds_on_their_own_day,
    aggregate_state_at_a_time_replays_the_events_recorded_by_then,
    sessions_audit_and_journal_read_as_documented,
    the_openapi_document_is_openapi_3_and_lists_every_read_route,
);
