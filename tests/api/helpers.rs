//! The test harness: a real server on a random port over a fresh database, on either
//! backend. PostgreSQL is found at `TEST_DATABASE_URL`, else
//! `postgres://postgres@127.0.0.1:5432/postgres`; every test gets its own database there.

use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::Duration;

use latchkey::config::{DatabaseUrl, Settings};
use latchkey::startup::{Application, BuildOptions};
use latchkey::store::subscription::SubscriptionOptions;
use latchkey::store::{Database, PoolSize};
use sqlx::Connection;
use tempfile::TempDir;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Which database a test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs an `async fn name(backend: Backend)` once per backend, as two tests.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name($crate::helpers::Backend::Sqlite).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name($crate::helpers::Backend::Postgres).await
                }
            }
        )+
    };
}

static TRACING: LazyLock<()> = LazyLock::new(|| {
    if std::env::var("TEST_LOG").is_ok() {
        latchkey::telemetry::init(Default::default(), std::io::stdout);
    } else {
        latchkey::telemetry::init(Default::default(), std::io::sink);
    }
});

fn postgres_admin_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string())
}

/// A database that exists only for one test.
pub struct TestDatabase {
    pub url: DatabaseUrl,
    /// Keeps the SQLite file's folder alive for the test's lifetime.
    _dir: Option<TempDir>,
}

impl TestDatabase {
    pub async fn create(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("a temporary folder for SQLite");
                let path = dir.path().join("latchkey.db");
                TestDatabase {
                    url: DatabaseUrl::Sqlite(format!("sqlite://{}", path.display())),
                    _dir: Some(dir),
                }
            }
            Backend::Postgres => {
                let admin = postgres_admin_url();
                let mut connection = sqlx::PgConnection::connect(&admin).await.unwrap_or_else(|error| {
                    panic!(
                        "PostgreSQL tests need a server at {admin} ({error}). Start one with \
                         `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` \
                         or point TEST_DATABASE_URL at one."
                    )
                });
                let name = format!("latchkey_test_{}", uuid::Uuid::new_v4().simple());
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&mut connection)
                    .await
                    .expect("CREATE DATABASE");
                let mut url = url::Url::parse(&admin).expect("TEST_DATABASE_URL is a URL");
                url.set_path(&name);
                TestDatabase {
                    url: DatabaseUrl::Postgres(url.to_string()),
                    _dir: None,
                }
            }
        }
    }

    /// Another handle on the same database, for a second app instance. The first handle
    /// keeps a SQLite file's folder alive.
    pub fn another_handle(&self) -> TestDatabase {
        TestDatabase {
            url: self.url.clone(),
            _dir: None,
        }
    }

    /// Another handle on the same PostgreSQL database whose connections carry
    /// `application_name`, so `pg_stat_activity` tells instances apart.
    pub fn with_application_name(&self, name: &str) -> TestDatabase {
        let DatabaseUrl::Postgres(url) = &self.url else {
            panic!("application names are a PostgreSQL feature");
        };
        let mut url = url::Url::parse(url).expect("a PostgreSQL URL");
        url.query_pairs_mut().append_pair("application_name", name);
        TestDatabase {
            url: DatabaseUrl::Postgres(url.to_string()),
            _dir: None,
        }
    }

    /// A separate, migrated pool on this database (a second "instance").
    pub async fn connect(&self) -> Database {
        let database = Database::connect(
            &self.url,
            PoolSize {
                max_connections: 10,
            },
        )
        .await
        .expect("connect to the test database");
        database.migrate().await.expect("migrate the test database");
        database
    }

    /// The name of the PostgreSQL database, for dropping it.
    pub fn postgres_name(&self) -> Option<String> {
        match &self.url {
            DatabaseUrl::Postgres(url) => url::Url::parse(url)
                .ok()
                .map(|url| url.path().trim_start_matches('/').to_string()),
            DatabaseUrl::Sqlite(_) => None,
        }
    }

    /// Drops the PostgreSQL database under the running app (terminating its sessions).
    pub async fn drop_postgres(&self) {
        let name = self.postgres_name().expect("a PostgreSQL test database");
        let mut connection = sqlx::PgConnection::connect(&postgres_admin_url())
            .await
            .unwrap();
        sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
            .execute(&mut connection)
            .await
            .unwrap();
    }
}

/// The bootstrap admin token every test app accepts.
pub const ADMIN_TOKEN: &str = "test-admin-token";
/// The token `/metrics` asks for in tests.
pub const METRICS_TOKEN: &str = "test-metrics-token";

/// Settings for a test instance: port 0, the given database, the admin token, no
/// integrations. Two security defaults are opened explicitly, because the simulators and
/// most tests need them: device calls may reach loopback (where the simulators listen),
/// and the bootstrap token keeps working after a test creates an admin account. The
/// security tests (`tests/api/security.rs`) close both again.
pub fn test_settings(url: &DatabaseUrl) -> Settings {
    let vars = HashMap::from([
        ("LATCHKEY_API_TOKEN".to_string(), ADMIN_TOKEN.to_string()),
        (
            "LATCHKEY_DEVICE_NETWORKS".to_string(),
            "127.0.0.0/8,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16".to_string(),
        ),
        (
            "LATCHKEY_METRICS_TOKEN".to_string(),
            METRICS_TOKEN.to_string(),
        ),
        // Every test's client is 127.0.0.1; tests that start many checkouts must not
        // meet the per-address limit meant for the public.
        (
            "LATCHKEY_CHECKOUT_LIMIT_PER_ADDRESS".to_string(),
            "100000".to_string(),
        ),
        (
            "LATCHKEY_CHECKOUT_LIMIT_PER_TARGET".to_string(),
            "100000".to_string(),
        ),
    ]);
    let mut settings = Settings::from_vars(&vars).expect("default settings");
    settings.database_url = url.clone();
    settings.listen = "127.0.0.1:0".parse().unwrap();
    settings.security.bootstrap_token_always = true;
    settings
}

/// Subscriber options that keep tests fast: short polls and retries.
pub fn fast_subscriptions() -> SubscriptionOptions {
    SubscriptionOptions {
        batch_size: 50,
        idle_poll: Duration::from_millis(100),
        retry_delay: Duration::from_millis(20),
        retry_delay_max: Duration::from_millis(200),
        takeover_interval: Duration::from_millis(200),
        park_after_attempts: 5,
    }
}

/// A running application.
pub struct TestApp {
    pub address: String,
    pub database: Database,
    pub state: latchkey::http::AppState,
    pub subscriptions: latchkey::store::subscription::SubscriptionRuntime,
    pub appended: latchkey::store::repository::AppendSignal,
    pub client: reqwest::Client,
    pub shutdown: CancellationToken,
    pub server: JoinHandle<anyhow::Result<()>>,
    pub test_database: TestDatabase,
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(TestDatabase::create(backend).await, BuildOptions::default()).await
}

pub async fn spawn_app_with(test_database: TestDatabase, options: BuildOptions) -> TestApp {
    spawn_app_with_settings(test_database, options, |_| {}).await
}

/// Like [`spawn_app_with`], with the settings changed by `adjust` first (e.g. pointing
/// the integrations at simulators).
pub async fn spawn_app_with_settings(
    test_database: TestDatabase,
    mut options: BuildOptions,
    adjust: impl FnOnce(&mut Settings),
) -> TestApp {
    LazyLock::force(&TRACING);
    options.subscriptions = fast_subscriptions();
    options.pool_size = PoolSize {
        max_connections: 10,
    };
    options.workflows.retry_base = Duration::from_millis(100);
    options.workflows.retry_max = Duration::from_millis(400);
    options.workflows.schedule.poll_interval = Duration::from_millis(50);
    options.workflows.schedule.retry_base = Duration::from_millis(100);
    let mut settings = test_settings(&test_database.url);
    adjust(&mut settings);
    let application = Application::build_with(settings, options)
        .await
        .expect("the application builds");
    let port = application.port();
    let state = application.state().clone();
    let database = state.database.clone();
    let subscriptions = application.subscriptions().clone();
    let appended = application.append_signal().clone();
    let shutdown = application.shutdown_token();
    let server = tokio::spawn(application.run_until_stopped());
    TestApp {
        address: format!("http://127.0.0.1:{port}"),
        database,
        state,
        subscriptions,
        appended,
        client: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap(),
        shutdown,
        server,
        test_database,
    }
}

impl TestApp {
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .expect("request sent")
    }

    /// GET with a bearer token.
    pub async fn get_with_token(&self, path: &str, token: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.address))
            .bearer_auth(token)
            .send()
            .await
            .expect("request sent")
    }

    pub async fn send_json(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: &serde_json::Value,
    ) -> reqwest::Response {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.address))
            .json(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.expect("request sent")
    }

    pub async fn post_json(
        &self,
        path: &str,
        token: Option<&str>,
        body: &serde_json::Value,
    ) -> reqwest::Response {
        self.send_json(reqwest::Method::POST, path, token, body)
            .await
    }

    pub async fn patch_json(
        &self,
        path: &str,
        token: Option<&str>,
        body: &serde_json::Value,
    ) -> reqwest::Response {
        self.send_json(reqwest::Method::PATCH, path, token, body)
            .await
    }

    /// `/metrics` as the scraper sees it (with the metrics token).
    pub async fn metrics(&self) -> reqwest::Response {
        self.client
            .get(format!("{}/metrics", self.address))
            .bearer_auth(METRICS_TOKEN)
            .send()
            .await
            .expect("request sent")
    }

    /// A fresh API token with `role`.
    pub async fn token(&self, role: latchkey::http::auth::Role) -> String {
        latchkey::http::auth::create_token(&self.database, role, "test")
            .await
            .unwrap()
    }

    /// Stops the server and its background tasks, and waits for them.
    pub async fn stop(self) -> TestDatabase {
        self.shutdown.cancel();
        let _ = self.server.await;
        self.test_database
    }
}

/// Polls `check` until it returns true, at most `attempts` times `interval` apart.
pub async fn eventually<F, Fut>(attempts: u32, interval: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..attempts {
        if check().await {
            return true;
        }
        tokio::time::sleep(interval).await;
    }
    false
}
