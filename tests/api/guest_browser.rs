//! The guest flows in headless Chromium against the demo set-up (`Demo::start`, as
//! `latchkey demo` runs it): every guest page is photographed at phone size and checked
//! for labels and alt texts.

use chrono::Utc;
use fantoccini::Locator;
use latchkey::demo::{DEMO_DEVICE_UID, DEMO_DOOR_UID, DEMO_SHELLY_ID};

use crate::browser::{Browser, PHONE};
use crate::guest_pages::Guest;
use crate::helpers::Backend;

/// Opens `url`, checks it, and photographs it as `name`.
async fn look(browser: &Browser, name: &str) {
    browser.assert_accessible().await;
    browser.screenshot(name).await;
}

async fn fill(browser: &Browser, css: &str, text: &str) {
    let field = browser.client.find(Locator::Css(css)).await.expect(css);
    field.clear().await.unwrap();
    field.send_keys(text).await.unwrap();
}

async fn click(browser: &Browser, css: &str) {
    browser
        .client
        .find(Locator::Css(css))
        .await
        .expect(css)
        .click()
        .await
        .unwrap();
}

/// On the simulated Stripe Checkout page: pay with `card`.
async fn pay_on_checkout(browser: &Browser, guest: &Guest, card: &str) {
    let url = browser.client.current_url().await.unwrap();
    assert!(
        url.as_str().starts_with(&guest.demo.stripe.url()),
        "on Stripe's page: {url}"
    );
    fill(browser, "input[name=card]", card).await;
    click(browser, "button[type=submit]").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_door_guest_pays_and_gets_a_code_that_opens_the_lock() {
    let guest = Guest::start(Backend::Sqlite).await;
    let browser = Browser::start(PHONE).await;

    browser.open(&format!("{}/pay/999", guest.demo.url)).await;
    browser.wait_for_text("There is no door", 5).await;
    look(&browser, "guest_door_unknown").await;

    browser.open(&guest.demo.pay_url()).await;
    browser.wait_for_text("Guest room 12", 5).await;
    look(&browser, "guest_door_pay").await;

    fill(&browser, "#email", "not an email").await;
    click(&browser, "button[type=submit]").await;
    browser
        .wait_for_text("Please enter a valid email address", 5)
        .await;
    look(&browser, "guest_door_pay_invalid_email").await;

    fill(&browser, "#email", "guest@example.com").await;
    click(&browser, "button[type=submit]").await;
    browser.wait_for_text("Simulated Stripe Checkout", 10).await;

    // Declined first: the guest sees why and tries another card.
    pay_on_checkout(&browser, &guest, "4000000000000002").await;
    browser.wait_for_text("Your card was declined", 10).await;
    click(&browser, "a").await;
    browser.wait_for_text("Simulated Stripe Checkout", 10).await;
    pay_on_checkout(&browser, &guest, "4242424242424242").await;

    let text = browser.wait_for_text("Your door code", 20).await;
    let url = browser.client.current_url().await.unwrap();
    assert!(url.path().starts_with("/access/"), "{url}");
    assert!(
        !text.contains("guest@example.com"),
        "no email on the token page"
    );
    look(&browser, "guest_door_access").await;
    let code = browser
        .client
        .find(Locator::Css(".passcode"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        code.len() >= 4 && code.chars().all(|c| c.is_ascii_digit()),
        "{code}"
    );
    let lock_id: i64 = DEMO_DOOR_UID.parse().unwrap();
    let entry = guest
        .demo
        .ttlock
        .sim()
        .enter_passcode(lock_id, &code, Utc::now())
        .unwrap();
    assert!(
        entry.opens,
        "the code opens the simulated lock: {}",
        entry.reason
    );
    let wrong = guest
        .demo
        .ttlock
        .sim()
        .enter_passcode(lock_id, "000000", Utc::now())
        .unwrap();
    assert!(!wrong.opens);

    let forged = format!(
        "{}/access/{}",
        guest.demo.url,
        latchkey::payments::tokens::generate()
    );
    browser.open(&forged).await;
    browser.wait_for_text("This link is not valid", 5).await;
    look(&browser, "guest_token_unknown").await;

    browser.close().await;
    guest.demo.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_guest_sees_the_countdown_start_and_the_relay_turns_on() {
    let guest = Guest::start(Backend::Sqlite).await;
    let browser = Browser::start(PHONE).await;
    let relay_on = || {
        guest
            .demo
            .shelly
            .sim()
            .relay(DEMO_SHELLY_ID, 0)
            .map(|relay| relay.output)
            .unwrap_or(false)
    };
    assert!(!relay_on());

    browser.open(&guest.demo.use_url()).await;
    browser.wait_for_text("Free now", 5).await;
    look(&browser, "guest_device_use").await;

    click(&browser, "input[value=long]").await;
    fill(&browser, "#email", "guest@example.com").await;
    click(&browser, "button[type=submit]").await;
    browser.wait_for_text("Simulated Stripe Checkout", 10).await;
    pay_on_checkout(&browser, &guest, "4242424242424242").await;

    browser.wait_for_text("Time left", 30).await;
    let url = browser.client.current_url().await.unwrap();
    assert!(url.path().starts_with("/session/"), "{url}");
    assert!(relay_on(), "the relay is ON once the countdown runs");
    let countdown = || async {
        browser
            .client
            .find(Locator::Css(".countdown"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let first = countdown().await;
    assert!(
        first.starts_with("44:") || first == "45:00",
        "a 45-minute plan: {first}"
    );
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let later = countdown().await;
    assert!(
        later < first,
        "the countdown runs in the page: {first} then {later}"
    );
    look(&browser, "guest_device_session_active").await;

    browser
        .open(&format!("{}/use/{DEMO_DEVICE_UID}", guest.demo.url))
        .await;
    browser.wait_for_text("In use", 5).await;
    look(&browser, "guest_device_busy").await;

    browser.close().await;
    guest.demo.stop().await.unwrap();
}
