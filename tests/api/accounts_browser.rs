//! Account pages in headless Chromium (issue 9): first login with a one-time password
//! (new password, TOTP enrolment from the page's secret), logout, login with password and
//! TOTP where a wrong code is refused, the account, users and settings pages (Stripe keys
//! saved, only their last four characters shown, no plaintext in the table), each page
//! photographed at 1440×900 and 390×844 and checked for accessibility.

use fantoccini::Locator;
use latchkey::accounts::{password, totp, users};
use latchkey::http::auth::Role;
use latchkey::startup::BuildOptions;
use secrecy::SecretString;

use crate::accounts_support::fresh_code;
use crate::browser::{Browser, PHONE};
use crate::helpers::{spawn_app_with_settings, Backend, TestApp, TestDatabase};
use crate::settings::{settings_table_text, MASTER_KEY};

const DESKTOP: (u32, u32) = (1440, 900);
const NEW_PASSWORD: &str = "a long and private passphrase";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_pages_at_desktop_size() {
    account_pages(DESKTOP, "desktop").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_pages_at_phone_size() {
    account_pages(PHONE, "phone").await;
}

async fn fill(browser: &Browser, css: &str, value: &str) {
    let field = browser.client.find(Locator::Css(css)).await.unwrap();
    field.clear().await.unwrap();
    field.send_keys(value).await.unwrap();
}

async fn click(browser: &Browser, css: &str) {
    browser
        .client
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|_| panic!("no {css}"))
        .click()
        .await
        .unwrap();
    // Let the form's navigation start before the page is read again.
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
}

async fn photograph(browser: &Browser, page: &str, size: &str) {
    browser.assert_accessible().await;
    browser.screenshot(&format!("account-{page}-{size}")).await;
}

async fn account_pages(viewport: (u32, u32), size: &str) {
    let app: TestApp = spawn_app_with_settings(
        TestDatabase::create(Backend::Sqlite).await,
        BuildOptions::default(),
        |settings| settings.master_key = Some(SecretString::from(MASTER_KEY.to_string())),
    )
    .await;
    let one_time = password::one_time();
    let hash = password::hash(&one_time).unwrap();
    let admin = users::create(&app.database, "root@example.com", Role::Admin, &hash, true)
        .await
        .unwrap();
    let browser = Browser::start(viewport).await;
    let url = |path: &str| format!("{}{path}", app.address);

    // First login: the one-time password leads to a new password, then enrolment.
    browser.open(&url("/dashboard")).await;
    browser.wait_for_text("Log in", 5).await;
    photograph(&browser, "login", size).await;
    fill(&browser, "#email", "root@example.com").await;
    fill(&browser, "#password", &one_time).await;
    click(&browser, "form[action='/login'] button").await;
    browser.wait_for_text("Choose your own password", 5).await;
    photograph(&browser, "password", size).await;
    fill(&browser, "#new_password", NEW_PASSWORD).await;
    fill(&browser, "#confirm", NEW_PASSWORD).await;
    click(&browser, "form[action='/account/password'] button").await;
    browser.wait_for_text("Scan this code", 5).await;
    photograph(&browser, "enrolment", size).await;
    let secret = browser
        .client
        .find(Locator::Css("code[data-secret]"))
        .await
        .unwrap()
        .attr("data-secret")
        .await
        .unwrap()
        .unwrap();
    let step = totp::step_at(chrono::Utc::now().timestamp());
    let code = totp::code_for_step(&totp::base32_decode(&secret).unwrap(), step - 1);
    fill(&browser, "#code", &code).await;
    click(&browser, "form[action='/account/2fa'] button").await;
    let text = browser.wait_for_text("not shown again", 5).await;
    assert!(text.contains("Backup codes"), "{text}");
    photograph(&browser, "backup-codes", size).await;

    // Log out, then log in with password and TOTP; a wrong code is refused first.
    click(&browser, "a.button[href='/dashboard']").await;
    browser.wait_for_text("Log out", 5).await;
    click(&browser, "form[action='/logout'] button").await;
    browser.wait_for_text("You are logged out", 5).await;
    fill(&browser, "#email", "root@example.com").await;
    fill(&browser, "#password", NEW_PASSWORD).await;
    click(&browser, "form[action='/login'] button").await;
    browser.wait_for_text("6-digit code", 5).await;
    photograph(&browser, "code", size).await;
    fill(&browser, "#code", "000000").await;
    click(&browser, "form[action='/login/code'] button").await;
    browser.wait_for_text("That code is not right", 5).await;
    let code = fresh_code(&app.database, &admin.user_id, &secret).await;
    fill(&browser, "#code", &code).await;
    click(&browser, "form[action='/login/code'] button").await;
    browser.wait_for_text("Dashboard", 5).await;
    let current = browser.client.current_url().await.unwrap();
    assert_eq!(current.path(), "/dashboard");

    // Account: create an API token (shown once).
    browser.open(&url("/account")).await;
    browser.wait_for_text("API tokens", 5).await;
    fill(&browser, "#label", "reporting script").await;
    click(&browser, "form[action='/account/tokens'] button").await;
    browser.wait_for_text("it is not shown again", 5).await;
    photograph(&browser, "account", size).await;

    // Users: invite an operator.
    browser.open(&url("/users")).await;
    fill(&browser, "#email", "helper@example.com").await;
    click(&browser, "form[action='/users'] button").await;
    browser.wait_for_text("One-time password for", 5).await;
    photograph(&browser, "users", size).await;

    // Settings: Stripe keys are saved and shown only by their last four characters.
    browser.open(&url("/settings")).await;
    browser.wait_for_text("Stripe", 5).await;
    fill(
        &browser,
        "#stripe_secret_key",
        "sk_test_browser_secret_4321",
    )
    .await;
    fill(&browser, "#stripe_publishable_key", "pk_test_browser").await;
    click(&browser, "form[action='/settings/stripe'] button").await;
    let text = browser.wait_for_text("Stripe settings saved", 5).await;
    assert!(text.contains("…4321"), "{text}");
    let html = browser.client.source().await.unwrap();
    assert!(!html.contains("sk_test_browser_secret_4321"));
    photograph(&browser, "settings", size).await;
    let table = settings_table_text(&app).await;
    assert!(table.contains("STRIPE_SECRET_KEY"), "{table}");
    assert!(
        !table.contains("browser_secret"),
        "plaintext in the table: {table}"
    );

    browser.close().await;
    app.stop().await;
}
