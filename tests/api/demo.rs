//! `latchkey demo` set-up beyond the guest flows: the dashboard account it hands out, and
//! a restart on the same database that neither re-seeds nor hands out a second account.

use latchkey::accounts::users;
use latchkey::demo::{Demo, DemoAdmin, DEMO_ADMIN_EMAIL};
use latchkey::startup::BuildOptions;

use crate::accounts_support::Agent;
use crate::helpers::{fast_subscriptions, test_settings, Backend, TestDatabase};
use crate::on_both_backends;

async fn start_demo(database: &TestDatabase) -> Demo {
    let mut settings = test_settings(&database.url);
    settings.listen = "127.0.0.1:0".parse().unwrap();
    let options = BuildOptions {
        subscriptions: fast_subscriptions(),
        ..BuildOptions::default()
    };
    Demo::start(settings, options)
        .await
        .expect("the demo starts")
}

async fn the_demo_hands_out_one_dashboard_login_and_restarts_without_reseeding(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let demo = start_demo(&database).await;
    let DemoAdmin::Created { one_time_password } = demo.admin.clone() else {
        panic!("a fresh database gets a demo admin");
    };
    let mut agent = Agent::new(&demo.url);
    let page = agent
        .submit_password(DEMO_ADMIN_EMAIL, &one_time_password)
        .await;
    // The one-time password works, and the first login goes on to choose a new one.
    assert_eq!(page.location.as_deref(), Some("/account/password"));
    demo.stop().await.unwrap();

    // Starting again succeeds only if seeding skips what the first run registered.
    let again = start_demo(&database).await;
    assert!(matches!(again.admin, DemoAdmin::Existing));
    let accounts = users::list(&again.state.database).await.unwrap();
    assert_eq!(accounts.len(), 1, "a restart creates no second account");
    again.stop().await.unwrap();
}

on_both_backends!(the_demo_hands_out_one_dashboard_login_and_restarts_without_reseeding);
