//! Guest pages and their JSON twins without a browser: every refusal has its status and a
//! message a person can act on; stickers encode the public URLs; token pages leak nothing.

use std::time::{Duration, Instant};

use latchkey::demo::{Demo, DEMO_DEVICE_UID, DEMO_DOOR_UID};
use latchkey::payments::tokens;
use latchkey::startup::BuildOptions;
use serde_json::{json, Value};

use crate::helpers::{test_settings, Backend, TestDatabase, ADMIN_TOKEN};
use crate::on_both_backends;

/// The demo set-up on a fresh test database, with a plain HTTP client.
pub struct Guest {
    pub demo: Demo,
    pub client: reqwest::Client,
    _database: TestDatabase,
}

impl Guest {
    pub async fn start(backend: Backend) -> Guest {
        let database = TestDatabase::create(backend).await;
        let mut settings = test_settings(&database.url);
        settings.listen = "127.0.0.1:0".parse().unwrap();
        let options = BuildOptions {
            subscriptions: crate::helpers::fast_subscriptions(),
            ..BuildOptions::default()
        };
        let demo = Demo::start(settings, options)
            .await
            .expect("the demo starts");
        Guest {
            demo,
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            _database: database,
        }
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.demo.url))
            .send()
            .await
            .unwrap()
    }

    pub async fn post_form(&self, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        self.client
            .post(format!("{}{path}", self.demo.url))
            .form(form)
            .send()
            .await
            .unwrap()
    }

    async fn patch(&self, path: &str, body: Value) -> u16 {
        self.client
            .patch(format!("{}{path}", self.demo.url))
            .bearer_auth(ADMIN_TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }
}

async fn status_and_text(response: reqwest::Response) -> (u16, String) {
    (response.status().as_u16(), response.text().await.unwrap())
}

async fn refusals_have_statuses_and_messages(backend: Backend) {
    let guest = Guest::start(backend).await;
    let door = format!("/pay/{DEMO_DOOR_UID}");
    let device = format!("/use/{DEMO_DEVICE_UID}");

    let (status, page) = status_and_text(guest.get(&door).await).await;
    assert_eq!(status, 200);
    assert!(
        page.contains("Guest room 12") && page.contains("€15.00") && page.contains("2 hours"),
        "{page}"
    );
    assert!(page.contains(r#"<label for="email">"#));

    let (status, page) = status_and_text(guest.get("/pay/999").await).await;
    assert_eq!(status, 404);
    assert!(page.contains("There is no door"), "{page}");

    let (status, page) =
        status_and_text(guest.post_form(&door, &[("email", "not-an-email")]).await).await;
    assert_eq!(status, 422, "{page}");
    assert!(
        page.contains(r#"id="email-error""#) && page.contains("valid email address"),
        "{page}"
    );
    assert!(
        page.contains(r#"value="not-an-email""#),
        "the form is re-shown with the input"
    );

    let (status, page) = status_and_text(
        guest
            .post_form(
                &device,
                &[("email", "guest@example.com"), ("plan_id", "nope")],
            )
            .await,
    )
    .await;
    assert_eq!(status, 422, "{page}");
    assert!(page.contains("Please choose one of the plans"), "{page}");

    let response = guest
        .post_form(&door, &[("email", "guest@example.com")])
        .await;
    assert_eq!(response.status(), 303);
    let location = response.headers()["location"].to_str().unwrap().to_string();
    assert!(location.starts_with(&guest.demo.stripe.url()), "{location}");

    // Stripe down: a 502 page with the form ready to send again.
    guest.demo.stripe.fail_next(10, 500);
    let (status, page) = status_and_text(
        guest
            .post_form(&door, &[("email", "guest@example.com")])
            .await,
    )
    .await;
    assert_eq!(status, 502, "{page}");
    assert!(
        page.contains("did not answer") && page.contains("Try again"),
        "{page}"
    );
    assert!(page.contains(r#"value="guest@example.com""#));
    guest.demo.stripe.fail_next(0, 500);

    let (status, page) = status_and_text(guest.get(&format!("{door}?cancelled=1")).await).await;
    assert_eq!(status, 200);
    assert!(
        page.contains("Payment cancelled: you were not charged"),
        "{page}"
    );

    assert_eq!(
        guest
            .patch(
                &format!("/api/doors/{DEMO_DOOR_UID}"),
                json!({"status": "maintenance", "reason": "paint"})
            )
            .await,
        200
    );
    let (status, page) = status_and_text(guest.get(&door).await).await;
    assert_eq!(status, 409);
    assert!(
        page.contains("under maintenance") && !page.contains("<form"),
        "{page}"
    );
    let (status, _) = status_and_text(
        guest
            .post_form(&door, &[("email", "guest@example.com")])
            .await,
    )
    .await;
    assert_eq!(status, 409);

    // Tokens: unknown, malformed, wrong kind.
    let unknown = tokens::generate();
    for path in [format!("/access/{unknown}"), format!("/session/{unknown}")] {
        let (status, page) = status_and_text(guest.get(&path).await).await;
        assert_eq!(status, 404, "{path}");
        assert!(page.contains("This link is not valid"), "{page}");
    }
    for malformed in ["short", &"a".repeat(44), &format!("{}!", "a".repeat(42))] {
        let (status, page) =
            status_and_text(guest.get(&format!("/access/{malformed}")).await).await;
        assert_eq!(status, 404);
        assert!(page.contains("This link is incomplete"), "{page}");
        let response = guest.get(&format!("/api/access/{malformed}")).await;
        assert_eq!(response.status(), 404);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "not_found");
    }

    let sticker = guest
        .get(&format!("/api/doors/{DEMO_DOOR_UID}/qr.svg"))
        .await;
    assert_eq!(sticker.status(), 200);
    assert_eq!(sticker.headers()["content-type"], "image/svg+xml");
    let svg = sticker.text().await.unwrap();
    assert!(
        svg.contains(&format!("{}/pay/{DEMO_DOOR_UID}", guest.demo.url)) && svg.contains("<path")
    );
    let sticker = guest
        .get(&format!("/api/devices/{DEMO_DEVICE_UID}/qr.svg"))
        .await;
    assert!(sticker
        .text()
        .await
        .unwrap()
        .contains(&format!("/use/{DEMO_DEVICE_UID}")));
    assert_eq!(guest.get("/api/devices/nope/qr.svg").await.status(), 404);
    guest.demo.stop().await.unwrap();
}

/// A busy device says until when, and still takes payments (they queue).
async fn a_busy_device_shows_when_it_frees_up(backend: Backend) {
    let guest = Guest::start(backend).await;
    let device = format!("/use/{DEMO_DEVICE_UID}");
    let (_, page) = status_and_text(guest.get(&device).await).await;
    assert!(page.contains("Free now"), "{page}");
    let first = pay_device(&guest, "4242424242424242").await;
    wait_for_session_state(&guest, &first, "active").await;
    let (status, page) = status_and_text(guest.get(&device).await).await;
    assert_eq!(status, 200);
    assert!(
        page.contains("In use") && page.contains("until about"),
        "{page}"
    );
    let second = pay_device(&guest, "4242424242424242").await;
    let body = wait_for_session_state(&guest, &second, "waiting").await;
    assert!(body["expected_start"].is_string(), "{body}");
    assert!(body.get("email").is_none() && !body.to_string().contains("guest@example.com"));
    guest.demo.stop().await.unwrap();
}

/// Starts a device checkout through the form and pays it on the simulator; returns the
/// token path (`/session/…`).
pub async fn pay_device(guest: &Guest, card: &str) -> String {
    let response = guest
        .post_form(
            &format!("/use/{DEMO_DEVICE_UID}"),
            &[("email", "guest@example.com"), ("plan_id", "short")],
        )
        .await;
    assert_eq!(response.status(), 303);
    let checkout = response.headers()["location"].to_str().unwrap().to_string();
    let session_id = checkout.rsplit('/').next().unwrap().to_string();
    let paid = guest
        .client
        .post(format!(
            "{}/_sim/checkout/{session_id}/pay",
            guest.demo.stripe.url()
        ))
        .form(&[("card", card)])
        .send()
        .await
        .unwrap();
    let location = paid
        .headers()
        .get("location")
        .map(|value| value.to_str().unwrap().to_string());
    location
        .map(|url| url.replace(&guest.demo.url, ""))
        .unwrap_or_default()
}

pub async fn wait_for_session_state(guest: &Guest, page: &str, state: &str) -> Value {
    let api = format!("/api{page}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let body: Value = guest.get(&api).await.json().await.unwrap();
        if body["state"] == state {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{api} never reached {state}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

on_both_backends!(
    refusals_have_statuses_and_messages,
    a_busy_device_shows_when_it_frees_up
);
