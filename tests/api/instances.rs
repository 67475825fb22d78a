//! Many instances on one database (issue 20): what is shared through the database rather
//! than held per process. (Fenced singletons are tested beside the reconciler's takeover,
//! in `device_sessions`; the settings broadcast in `settings`.)

use std::time::Duration;

use latchkey::http::auth::Role;
use latchkey::startup::BuildOptions;
use secrecy::SecretString;
use serde_json::Value;

use crate::dashboard_pages::{login, page};
use crate::helpers::{
    eventually, spawn_app_with_settings, Backend, TestApp, TestDatabase, ADMIN_TOKEN,
};
use crate::on_both_backends;
use crate::stripe_support::{spawn_sim, API_KEY};

/// What an operator reads about health from one instance: every module, and the last
/// catch-up run.
async fn health_answer(app: &TestApp) -> (Value, Value) {
    let modules: Value = app
        .get_with_token("/api/health/modules", ADMIN_TOKEN)
        .await
        .json()
        .await
        .unwrap();
    let diagnostics: Value = app
        .get_with_token("/api/stripe/diagnostics", ADMIN_TOKEN)
        .await
        .json()
        .await
        .unwrap();
    (modules["modules"].clone(), diagnostics["catch_up"].clone())
}

fn module<'a>(modules: &'a Value, name: &str) -> &'a Value {
    modules
        .as_array()
        .and_then(|modules| modules.iter().find(|module| module["name"] == name))
        .unwrap_or_else(|| panic!("module {name} in {modules}"))
}

/// A TTLock failure observed by one instance, and a catch-up run made by it, read the same
/// from the other instance (which made no call at all), on the JSON API and the dashboard.
async fn health_and_catch_up_status_are_the_same_from_every_instance(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let stripe = spawn_sim().await;
    let stripe_url = stripe.url();
    let configure = |settings: &mut latchkey::config::Settings| {
        settings.stripe.secret_key = Some(SecretString::from(API_KEY.to_string()));
        settings.stripe.api_base = Some(stripe_url.parse().unwrap());
        settings.ttlock.client_id = Some("client".to_string());
        settings.ttlock.client_secret = Some(SecretString::from("secret".to_string()));
        settings.ttlock.username = Some("owner".to_string());
        settings.ttlock.password = Some(SecretString::from("password".to_string()));
        settings.ttlock.api_base = Some("http://127.0.0.1:9".parse().unwrap());
    };
    let first = spawn_app_with_settings(
        database.another_handle(),
        BuildOptions::default(),
        configure,
    )
    .await;
    let second = spawn_app_with_settings(
        database.another_handle(),
        BuildOptions::default(),
        configure,
    )
    .await;
    let ttlock_health = |app: &TestApp| {
        app.state
            .gateways
            .current()
            .health
            .iter()
            .find(|health| health.name() == "ttlock")
            .cloned()
            .expect("a TTLock module")
    };
    ttlock_health(&first).record_error(&"the lock's gateway is offline");
    first.state.stripe.catch_up_now().await.unwrap();

    assert!(
        eventually(40, Duration::from_millis(50), || async {
            let (first_modules, first_catch_up) = health_answer(&first).await;
            let (second_modules, second_catch_up) = health_answer(&second).await;
            let ttlock = module(&second_modules, "ttlock");
            ttlock["state"] == "failing"
                && ttlock["last_error"] == "the lock's gateway is offline"
                && first_modules == second_modules
                && second_catch_up["report"]["ran"] == true
                && first_catch_up == second_catch_up
        })
        .await,
        "both instances answer the same within 2 s: {:?} / {:?}",
        health_answer(&first).await,
        health_answer(&second).await
    );
    assert_eq!(
        ttlock_health(&second).snapshot().calls_failed_total,
        0,
        "the second instance made no call: what it shows came from the database"
    );
    assert_eq!(
        module(&health_answer(&second).await.0, "stripe")["state"],
        "ok"
    );
    let auditor = login(&second.database, Role::Auditor).await;
    let (status, body) = page(&second, "/dashboard/live", &auditor).await;
    assert_eq!(status, 200);
    assert!(
        body.contains("gateway is offline"),
        "the dashboard too: {body}"
    );

    // A success anywhere after the failure clears it everywhere.
    ttlock_health(&second).record_ok();
    assert!(
        eventually(40, Duration::from_millis(50), || async {
            let (first_modules, _) = health_answer(&first).await;
            let (second_modules, _) = health_answer(&second).await;
            module(&first_modules, "ttlock")["state"] == "ok" && first_modules == second_modules
        })
        .await,
        "a later success on the other instance is seen by both"
    );
    second.stop().await;
    first.stop().await;
    stripe.stop().await;
}

on_both_backends!(health_and_catch_up_status_are_the_same_from_every_instance);
