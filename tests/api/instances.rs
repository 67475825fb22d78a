//! Many instances on one database (issue 20): what is shared through the database rather
//! than held per process. (Fenced singletons are tested beside the reconciler's takeover,
//! in `device_sessions`; the settings broadcast in `settings`.) And the guard that keeps a
//! SQLite file to one server process.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

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

/// A `latchkey serve` process of the real binary, its log lines collected as they come.
struct Server {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
}

fn serve_command(database_url: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_latchkey"));
    command
        .arg("serve")
        .env_clear()
        .env("DATABASE_URL", database_url)
        .env("LATCHKEY_LISTEN", "127.0.0.1:0")
        .env("RUST_LOG", "info");
    command
}

impl Server {
    fn start(database_url: &str) -> Server {
        let mut child = serve_command(database_url)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the latchkey binary starts");
        let (sender, lines) = mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let sender = sender.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let _ = sender.send(line);
                }
            });
        }
        Server {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Whether a log line containing `text` arrives within `budget`.
    fn logs_within(&mut self, text: &str, budget: Duration) -> bool {
        let deadline = Instant::now() + budget;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let found = line.contains(text);
                    self.seen.push(line);
                    if found {
                        return true;
                    }
                }
                Err(_) => return false,
            }
        }
        false
    }

    /// SIGKILL: nothing of the process's own shutdown runs.
    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `command` to its end, failing the test if it is still running after `budget`
/// (a second server that did not refuse would serve for ever).
fn run_within(mut command: Command, budget: Duration) -> std::process::Output {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the latchkey binary starts");
    let deadline = Instant::now() + budget;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let output = child.wait_with_output().unwrap();
            panic!(
                "still running after {budget:?}: {}",
                String::from_utf8_lossy(&output.stdout)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// A second `latchkey serve` on the SQLite file a running one serves exits at once with a
/// message that says why and what to do; once the first is gone (killed: no clean-up ran)
/// a new one starts. On PostgreSQL two servers on one database are the point: both start.
async fn a_second_server_on_one_sqlite_file_refuses_to_start(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let url = database.url.as_str().to_string();
    tokio::task::spawn_blocking(move || {
        let budget = Duration::from_secs(60);
        let mut first = Server::start(&url);
        assert!(
            first.logs_within("serving", budget),
            "the first server starts: {:?}",
            first.seen
        );
        match backend {
            Backend::Sqlite => {
                let output = run_within(serve_command(&url), budget);
                let stderr = String::from_utf8_lossy(&output.stderr);
                assert!(!output.status.success(), "the second server refuses");
                assert!(
                    stderr.contains(
                        "another Latchkey process is already serving the SQLite database"
                    ) && stderr.contains(".lock")
                        && stderr.contains("PostgreSQL"),
                    "{stderr}"
                );
                first.kill();
                let mut third = Server::start(&url);
                assert!(
                    third.logs_within("serving", budget),
                    "a killed server leaves no stale lock: {:?}",
                    third.seen
                );
                third.kill();
            }
            Backend::Postgres => {
                let mut second = Server::start(&url);
                assert!(
                    second.logs_within("serving", budget),
                    "a second server on PostgreSQL starts: {:?}",
                    second.seen
                );
                second.kill();
                first.kill();
            }
        }
    })
    .await
    .unwrap();
    drop(database);
}

on_both_backends!(a_second_server_on_one_sqlite_file_refuses_to_start);
