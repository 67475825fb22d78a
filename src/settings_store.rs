//! Settings saved from the dashboard (issue 9): integration credentials and guest-page
//! branding, stored under the names of the environment variables they stand in for.
//!
//! The environment wins: a variable that is set overrides the stored value and the page
//! shows it as such. Secrets are encrypted with `LATCHKEY_MASTER_KEY` ([`crate::secrets`])
//! and never shown again, only their last four characters; without a master key they are
//! refused. Saving re-reads the settings and swaps the integrations' clients at once; the
//! other instances on the same database follow within seconds ([`crate::settings_sync`]).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use secrecy::ExposeSecret;

use crate::config::Settings;
use crate::on_pool;
use crate::secrets::{last4, MasterKey, Sealed};
use crate::store::Database;

/// Which section of the page a setting belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Group {
    Branding,
    Stripe,
    Ttlock,
    Shelly,
}

/// One setting the page offers.
#[derive(Clone, Copy, Debug)]
pub struct Field {
    /// The environment variable it stands in for; also its row name.
    pub name: &'static str,
    pub label: &'static str,
    pub group: Group,
    pub secret: bool,
    /// Shown under the field.
    pub hint: &'static str,
}

/// Every setting the page offers, in page order.
pub const FIELDS: &[Field] = &[
    Field {
        name: "LATCHKEY_BRAND_NAME",
        label: "Business name",
        group: Group::Branding,
        secret: false,
        hint: "shown on every guest page (at most 80 characters)",
    },
    Field {
        name: "LATCHKEY_BRAND_LOGO_URL",
        label: "Logo URL",
        group: Group::Branding,
        secret: false,
        hint: "an https:// image URL or a path on this site",
    },
    Field {
        name: "LATCHKEY_BRAND_COLOUR",
        label: "Accent colour",
        group: Group::Branding,
        secret: false,
        hint: "a hex colour such as #1f5fbf",
    },
    Field {
        name: "STRIPE_SECRET_KEY",
        label: "Secret key",
        group: Group::Stripe,
        secret: true,
        hint: "sk_test_… or sk_live_… (a restricted rk_… key works too)",
    },
    Field {
        name: "STRIPE_PUBLISHABLE_KEY",
        label: "Publishable key",
        group: Group::Stripe,
        secret: false,
        hint: "pk_test_… or pk_live_…",
    },
    Field {
        name: "STRIPE_WEBHOOK_SECRET",
        label: "Webhook signing secrets",
        group: Group::Stripe,
        secret: true,
        hint: "whsec_…; several, comma-separated, while rotating",
    },
    Field {
        name: "STRIPE_API_BASE",
        label: "API base URL",
        group: Group::Stripe,
        secret: false,
        hint: "leave empty for https://api.stripe.com",
    },
    Field {
        name: "TTLOCK_CLIENT_ID",
        label: "Client id",
        group: Group::Ttlock,
        secret: false,
        hint: "from the TTLock Open Platform application",
    },
    Field {
        name: "TTLOCK_CLIENT_SECRET",
        label: "Client secret",
        group: Group::Ttlock,
        secret: true,
        hint: "",
    },
    Field {
        name: "TTLOCK_USERNAME",
        label: "Account username",
        group: Group::Ttlock,
        secret: false,
        hint: "the TTLock app account that owns the locks",
    },
    Field {
        name: "TTLOCK_PASSWORD",
        label: "Account password",
        group: Group::Ttlock,
        secret: true,
        hint: "",
    },
    Field {
        name: "TTLOCK_API_BASE",
        label: "API base URL",
        group: Group::Ttlock,
        secret: false,
        hint: "leave empty for https://euapi.ttlock.com",
    },
    Field {
        name: "SHELLY_AUTH_KEY",
        label: "Cloud auth key",
        group: Group::Shelly,
        secret: true,
        hint: "Shelly app → User settings → Authorization cloud key",
    },
    Field {
        name: "SHELLY_SERVER",
        label: "Cloud server",
        group: Group::Shelly,
        secret: false,
        hint: "e.g. https://shelly-NN-eu.shelly.cloud",
    },
];

/// The field named `name`.
pub fn field(name: &str) -> Option<&'static Field> {
    FIELDS.iter().find(|field| field.name == name)
}

/// A stored setting as the page may show it: never a secret's value.
#[derive(Clone, Debug)]
pub struct StoredSetting {
    pub name: String,
    /// Non-secret values only.
    pub value: Option<String>,
    /// Secrets only.
    pub last4: Option<String>,
    pub updated_by: String,
    pub updated_ms: i64,
    /// Why a stored secret cannot be used (encrypted under another key, damaged).
    pub problem: Option<String>,
}

/// Why settings were not saved, in words for the admin.
#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    #[error("{0}")]
    Invalid(String),
    #[error(
        "secrets cannot be stored without LATCHKEY_MASTER_KEY: set it to 32 random bytes in \
         base64 (`openssl rand -base64 32`) and restart"
    )]
    NoMasterKey,
    #[error("{0} is set in the environment, which wins; change it there")]
    SetByEnvironment(&'static str),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// The settings of the running process: the environment's, overlaid with the stored
/// ones, re-read on every save.
#[derive(Clone)]
pub struct SettingsStore {
    database: Database,
    environment: Arc<Settings>,
    master_key: Option<MasterKey>,
    effective: Arc<RwLock<Arc<Settings>>>,
    /// A digest of the stored rows `effective` was built from: how an instance tells that
    /// another one saved something ([`crate::settings_sync`]).
    fingerprint: Arc<RwLock<Option<[u8; 32]>>>,
    /// One reload at a time, so an older read never overwrites a newer one.
    reloading: Arc<tokio::sync::Mutex<()>>,
}

type Row = (
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    String,
    i64,
);

impl SettingsStore {
    /// Reads the stored settings once and overlays them on `environment`.
    pub async fn load(database: Database, environment: Arc<Settings>) -> anyhow::Result<Self> {
        let store = SettingsStore {
            master_key: MasterKey::from_settings(&environment),
            effective: Arc::new(RwLock::new(environment.clone())),
            fingerprint: Arc::default(),
            reloading: Arc::default(),
            database,
            environment,
        };
        store.reload().await?;
        Ok(store)
    }

    /// The environment overlaid with the stored settings.
    pub fn effective(&self) -> Arc<Settings> {
        self.effective
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn master_key(&self) -> Option<&MasterKey> {
        self.master_key.as_ref()
    }

    /// Whether the environment sets `name` (and so wins over a stored value).
    pub fn set_by_environment(&self, name: &str) -> bool {
        environment_value(&self.environment, name).is_some()
    }

    /// What the environment sets `name` to, for showing: secrets as their last four.
    pub fn environment_display(&self, name: &str) -> Option<String> {
        let value = environment_value(&self.environment, name)?;
        Some(if field(name).is_some_and(|field| field.secret) {
            format!("…{}", last4(&value))
        } else {
            value
        })
    }

    /// Every stored setting, as the page may show it.
    pub async fn stored(&self) -> anyhow::Result<Vec<StoredSetting>> {
        Ok(self
            .rows()
            .await?
            .into_iter()
            .map(
                |(name, value, ciphertext, key_id, last4, updated_by, updated_ms)| {
                    let problem = match (&ciphertext, &key_id, &self.master_key) {
                        (Some(ciphertext), Some(key_id), Some(key)) => key
                            .open(
                                &name,
                                &Sealed {
                                    ciphertext: ciphertext.clone(),
                                    key_id: key_id.clone(),
                                },
                            )
                            .err()
                            .map(|error| error.to_string()),
                        (Some(_), _, None) => {
                            Some("stored encrypted, but LATCHKEY_MASTER_KEY is not set".to_string())
                        }
                        _ => None,
                    };
                    StoredSetting {
                        value: if ciphertext.is_some() { None } else { value },
                        name,
                        last4,
                        updated_by,
                        updated_ms,
                        problem,
                    }
                },
            )
            .collect())
    }

    async fn rows(&self) -> anyhow::Result<Vec<Row>> {
        let sql = "SELECT name, value, ciphertext, key_id, last4, updated_by, updated_ms \
                   FROM operator_settings ORDER BY name";
        Ok(on_pool!(&self.database, pool => sqlx::query_as(sql).fetch_all(pool).await)?)
    }

    /// Saves non-empty values (an empty field keeps what is stored), validated as the
    /// environment variable of the same name would be; then re-reads everything.
    pub async fn save(&self, changes: &[(String, String)], by: &str) -> Result<(), SaveError> {
        let changes: Vec<(&'static Field, &str)> = changes
            .iter()
            .filter(|(_, value)| !value.trim().is_empty())
            .map(|(name, value)| {
                field(name)
                    .map(|field| (field, value.trim()))
                    .ok_or_else(|| SaveError::Invalid(format!("{name} is not a setting")))
            })
            .collect::<Result<_, _>>()?;
        for (field, _) in &changes {
            if self.set_by_environment(field.name) {
                return Err(SaveError::SetByEnvironment(field.name));
            }
            if field.secret && self.master_key.is_none() {
                return Err(SaveError::NoMasterKey);
            }
        }
        let vars: HashMap<String, String> = changes
            .iter()
            .map(|(field, value)| (field.name.to_string(), value.to_string()))
            .collect();
        let parsed =
            Settings::from_vars(&vars).map_err(|error| SaveError::Invalid(error.to_string()))?;
        for (field, _) in &changes {
            if let Some(base) = api_base(&parsed, field.name) {
                check_api_base(&self.environment, field.name, base).map_err(SaveError::Invalid)?;
            }
        }
        for (field, value) in changes {
            self.upsert(field, value, by).await?;
            tracing::info!(setting = field.name, by, "setting saved");
        }
        self.reload().await?;
        crate::settings_sync::announce(&self.database).await;
        Ok(())
    }

    /// Removes a stored setting (the environment or the default applies again).
    pub async fn clear(&self, name: &str, by: &str) -> Result<(), SaveError> {
        let field =
            field(name).ok_or_else(|| SaveError::Invalid(format!("{name} is not a setting")))?;
        let sql = "DELETE FROM operator_settings WHERE name = $1";
        on_pool!(&self.database, pool => sqlx::query(sql).bind(field.name).execute(pool).await.map(|_| ()))
            .map_err(|error| SaveError::Internal(error.into()))?;
        tracing::info!(setting = field.name, by, "setting cleared");
        self.reload().await?;
        crate::settings_sync::announce(&self.database).await;
        Ok(())
    }

    async fn upsert(&self, field: &Field, value: &str, by: &str) -> Result<(), SaveError> {
        let (plain, sealed, tail) = if field.secret {
            let key = self.master_key.as_ref().ok_or(SaveError::NoMasterKey)?;
            (None, Some(key.seal(field.name, value)?), Some(last4(value)))
        } else {
            (Some(value.to_string()), None, None)
        };
        let sql = "INSERT INTO operator_settings (name, value, ciphertext, key_id, last4, \
                   updated_ms, updated_by) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                   ON CONFLICT (name) DO UPDATE SET value = excluded.value, \
                   ciphertext = excluded.ciphertext, key_id = excluded.key_id, \
                   last4 = excluded.last4, updated_ms = excluded.updated_ms, \
                   updated_by = excluded.updated_by";
        let ciphertext = sealed.as_ref().map(|sealed| sealed.ciphertext.clone());
        let key_id = sealed.as_ref().map(|sealed| sealed.key_id.clone());
        on_pool!(&self.database, pool => {
            sqlx::query(sql)
                .bind(field.name)
                .bind(&plain)
                .bind(&ciphertext)
                .bind(&key_id)
                .bind(&tail)
                .bind(crate::accounts::now_ms())
                .bind(by)
                .execute(pool)
                .await
                .map(|_| ())
        })
        .map_err(|error| SaveError::Internal(error.into()))
    }

    /// Re-reads the stored settings and overlays them on the environment.
    pub async fn reload(&self) -> anyhow::Result<Arc<Settings>> {
        let _one_at_a_time = self.reloading.lock().await;
        let rows = self.rows().await?;
        Ok(self.overlay_rows(rows))
    }

    /// Re-reads the stored settings if they differ from the ones this instance runs on
    /// (another instance saved something); `true` when they did.
    pub async fn reload_if_changed(&self) -> anyhow::Result<bool> {
        let _one_at_a_time = self.reloading.lock().await;
        let rows = self.rows().await?;
        let current = *self.fingerprint.read().unwrap_or_else(|p| p.into_inner());
        if current == Some(fingerprint(&rows)) {
            return Ok(false);
        }
        self.overlay_rows(rows);
        Ok(true)
    }

    fn overlay_rows(&self, rows: Vec<Row>) -> Arc<Settings> {
        let digest = fingerprint(&rows);
        let mut vars = HashMap::new();
        for (name, value, ciphertext, key_id, _, _, _) in rows {
            let plaintext = match (ciphertext, key_id, &self.master_key) {
                (Some(ciphertext), Some(key_id), Some(key)) => {
                    match key.open(&name, &Sealed { ciphertext, key_id }) {
                        Ok(plaintext) => Some(plaintext),
                        Err(error) => {
                            tracing::warn!(setting = name, %error, "a stored secret is unusable");
                            None
                        }
                    }
                }
                (Some(_), _, None) => {
                    tracing::warn!(setting = name, "a stored secret needs LATCHKEY_MASTER_KEY");
                    None
                }
                _ => value,
            };
            if let Some(plaintext) = plaintext {
                vars.insert(name, plaintext);
            }
        }
        let stored = Settings::from_vars(&vars).unwrap_or_else(|error| {
            tracing::warn!(%error, "stored settings are unusable; using the environment's");
            (*self.environment).clone()
        });
        let effective = Arc::new(overlay(&self.environment, &stored));
        *self.effective.write().unwrap_or_else(|p| p.into_inner()) = effective.clone();
        *self.fingerprint.write().unwrap_or_else(|p| p.into_inner()) = Some(digest);
        effective
    }
}

/// A SHA-256 over every stored row (ordered by name), each field length-prefixed.
fn fingerprint(rows: &[Row]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    for (name, value, ciphertext, key_id, last4, updated_by, updated_ms) in rows {
        let fields = [
            Some(name.as_str()),
            value.as_deref(),
            ciphertext.as_deref(),
            key_id.as_deref(),
            last4.as_deref(),
            Some(updated_by.as_str()),
        ];
        for field in fields {
            match field {
                Some(text) => {
                    hasher.update([1]);
                    hasher.update((text.len() as u64).to_be_bytes());
                    hasher.update(text.as_bytes());
                }
                None => hasher.update([0]),
            }
        }
        hasher.update(updated_ms.to_be_bytes());
    }
    hasher.finalize().into()
}

/// The API base URL settings: where an integration's credentials are sent.
const API_BASES: [&str; 3] = ["STRIPE_API_BASE", "TTLOCK_API_BASE", "SHELLY_SERVER"];

/// The API base `name` in `settings`, if it is one and set.
fn api_base<'a>(settings: &'a Settings, name: &str) -> Option<&'a url::Url> {
    match name {
        "STRIPE_API_BASE" => settings.stripe.api_base.as_ref(),
        "TTLOCK_API_BASE" => settings.ttlock.api_base.as_ref(),
        "SHELLY_SERVER" => settings.shelly.server.as_ref(),
        _ => None,
    }
}

/// Whether the environment supplies any secret of the integration whose base is `name`:
/// then a base saved on the settings page would receive the environment's secret.
fn environment_secret_for(environment: &Settings, name: &str) -> bool {
    match name {
        "STRIPE_API_BASE" => environment.stripe.secret_key.is_some(),
        "TTLOCK_API_BASE" => {
            environment.ttlock.client_secret.is_some() || environment.ttlock.password.is_some()
        }
        "SHELLY_SERVER" => environment.shelly.auth_key.is_some(),
        _ => false,
    }
}

/// An API base saved on the settings page must be https (or a host the environment
/// allows in `LATCHKEY_ALLOWED_API_HOSTS`, e.g. a simulator), and may not redirect the
/// environment's own secrets: a secret set in the environment only ever goes to the
/// host the environment named (or the default).
pub fn check_api_base(environment: &Settings, name: &str, base: &url::Url) -> Result<(), String> {
    if environment_secret_for(environment, name) {
        return Err(format!(
            "{name} cannot be saved here while this integration's credentials come from the \
             environment (they would be sent to a host the environment did not name); set \
             {name} in the environment instead"
        ));
    }
    let host = base.host_str().unwrap_or_default().to_ascii_lowercase();
    let allowed = &environment.security.allowed_api_hosts;
    if base.scheme() == "https" || allowed.contains(&host) {
        return Ok(());
    }
    Err(format!(
        "{name} must be an https:// URL; {base} is not (a plain-http host must be listed in \
         LATCHKEY_ALLOWED_API_HOSTS)"
    ))
}

/// `environment`, with every integration setting it leaves unset taken from `stored`.
/// A stored API base that [`check_api_base`] refuses now (the environment changed since
/// it was saved) is ignored, with a warning.
pub fn overlay(environment: &Settings, stored: &Settings) -> Settings {
    let mut stored = stored.clone();
    for name in API_BASES {
        let refused = api_base(&stored, name)
            .map(|base| check_api_base(environment, name, base))
            .and_then(Result::err);
        if let Some(reason) = refused {
            tracing::warn!(setting = name, %reason, "a stored API base is ignored");
            match name {
                "STRIPE_API_BASE" => stored.stripe.api_base = None,
                "TTLOCK_API_BASE" => stored.ttlock.api_base = None,
                _ => stored.shelly.server = None,
            }
        }
    }
    let stored = &stored;
    let mut out = environment.clone();
    let (stripe, ttlock, shelly) = (&stored.stripe, &stored.ttlock, &stored.shelly);
    fill(&mut out.stripe.secret_key, &stripe.secret_key);
    fill(&mut out.stripe.publishable_key, &stripe.publishable_key);
    if out.stripe.webhook_secrets.is_empty() {
        out.stripe.webhook_secrets = stripe.webhook_secrets.clone();
    }
    fill(&mut out.stripe.api_base, &stripe.api_base);
    fill(&mut out.ttlock.client_id, &ttlock.client_id);
    fill(&mut out.ttlock.client_secret, &ttlock.client_secret);
    fill(&mut out.ttlock.username, &ttlock.username);
    fill(&mut out.ttlock.password, &ttlock.password);
    fill(&mut out.ttlock.api_base, &ttlock.api_base);
    fill(&mut out.shelly.auth_key, &shelly.auth_key);
    fill(&mut out.shelly.server, &shelly.server);
    // Brand settings have defaults rather than "unset": a default value means the
    // environment did not choose one.
    if out.brand.name == crate::config::DEFAULT_BRAND_NAME {
        out.brand.name.clone_from(&stored.brand.name);
    }
    fill(&mut out.brand.logo_url, &stored.brand.logo_url);
    if out.brand.colour == crate::config::DEFAULT_BRAND_COLOUR {
        out.brand.colour.clone_from(&stored.brand.colour);
    }
    out
}

fn fill<T: Clone>(target: &mut Option<T>, stored: &Option<T>) {
    if target.is_none() {
        target.clone_from(stored);
    }
}

/// The value the environment gives setting `name`, if any.
fn environment_value(settings: &Settings, name: &str) -> Option<String> {
    let secret = |value: &Option<secrecy::SecretString>| {
        value
            .as_ref()
            .map(|value| value.expose_secret().to_string())
    };
    let url = |value: &Option<url::Url>| value.as_ref().map(|url| url.to_string());
    match name {
        "STRIPE_SECRET_KEY" => secret(&settings.stripe.secret_key),
        "STRIPE_PUBLISHABLE_KEY" => settings.stripe.publishable_key.clone(),
        "STRIPE_WEBHOOK_SECRET" => Some(&settings.stripe.webhook_secrets)
            .filter(|secrets| !secrets.is_empty())
            .map(|secrets| {
                secrets
                    .iter()
                    .map(|secret| secret.expose_secret().to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            }),
        "STRIPE_API_BASE" => url(&settings.stripe.api_base),
        "TTLOCK_CLIENT_ID" => settings.ttlock.client_id.clone(),
        "TTLOCK_CLIENT_SECRET" => secret(&settings.ttlock.client_secret),
        "TTLOCK_USERNAME" => settings.ttlock.username.clone(),
        "TTLOCK_PASSWORD" => secret(&settings.ttlock.password),
        "TTLOCK_API_BASE" => url(&settings.ttlock.api_base),
        "SHELLY_AUTH_KEY" => secret(&settings.shelly.auth_key),
        "SHELLY_SERVER" => url(&settings.shelly.server),
        "LATCHKEY_BRAND_NAME" => Some(settings.brand.name.clone())
            .filter(|name| name != crate::config::DEFAULT_BRAND_NAME),
        "LATCHKEY_BRAND_LOGO_URL" => settings.brand.logo_url.clone(),
        "LATCHKEY_BRAND_COLOUR" => Some(settings.brand.colour.clone())
            .filter(|colour| colour != crate::config::DEFAULT_BRAND_COLOUR),
        _ => None,
    }
}

/// Rebuilds the Stripe credentials and every gateway from the effective settings and
/// swaps them in: what a save on the settings page ends with.
pub fn apply(state: &crate::http::AppState) -> anyhow::Result<()> {
    let effective = state.settings_store.effective();
    let credentials = crate::integrations::stripe::StripeCredentials::from_settings(&effective)?;
    let gateways =
        crate::gateways::Gateways::from_settings(&effective, credentials.client.as_ref())?;
    state.stripe.replace_credentials(credentials);
    state.gateways.replace(gateways);
    tracing::info!("integration clients rebuilt from the saved settings");
    Ok(())
}

/// The outcome of a **Test connection** button.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionReport {
    pub ok: bool,
    pub message: String,
}

impl ConnectionReport {
    fn ok(message: impl Into<String>) -> Self {
        ConnectionReport {
            ok: true,
            message: message.into(),
        }
    }

    fn failed(message: impl Into<String>) -> Self {
        ConnectionReport {
            ok: false,
            message: message.into(),
        }
    }
}

/// One real call to Stripe with the client in use now (lists one event).
pub async fn test_stripe(state: &crate::http::AppState) -> ConnectionReport {
    match state.stripe.client() {
        None => ConnectionReport::failed("Stripe is not configured: enter a secret key"),
        Some(client) => match client.test_connection().await {
            Ok(()) => ConnectionReport::ok("Stripe accepted the secret key"),
            Err(error) => ConnectionReport::failed(format!("Stripe refused: {error}")),
        },
    }
}

/// Logs in to TTLock with the client in use now and lists the account's locks.
pub async fn test_ttlock(state: &crate::http::AppState) -> ConnectionReport {
    let Some(client) = state.gateways.current().ttlock.clone() else {
        return ConnectionReport::failed(
            "TTLock is not configured: enter client id, client secret, username and password",
        );
    };
    match client.list_locks().await {
        Ok(locks) => ConnectionReport::ok(format!(
            "TTLock accepted the account; it has {} lock(s)",
            locks.len()
        )),
        Err(error) => ConnectionReport::failed(format!("TTLock refused: {error}")),
    }
}

/// Asks Shelly Cloud for the status of the devices registered here (or of a probe id
/// when there are none), with the client in use now.
pub async fn test_shelly(state: &crate::http::AppState) -> ConnectionReport {
    let gateways = state.gateways.current();
    let Some(client) = gateways.shelly.clone() else {
        return ConnectionReport::failed("Shelly is not configured: enter auth key and server");
    };
    if gateways.shelly_missing.is_some() {
        return ConnectionReport::failed(
            "Shelly Cloud is not configured: enter auth key and server",
        );
    }
    let sql = "SELECT DISTINCT shelly_device_id FROM catalogue_devices ORDER BY shelly_device_id LIMIT 10";
    let ids: Vec<String> =
        on_pool!(&state.database, pool => sqlx::query_scalar(sql).fetch_all(pool).await)
            .unwrap_or_default();
    let probe = ["latchkey-connection-test".to_string()];
    let ids: Vec<&str> = if ids.is_empty() { &probe[..] } else { &ids[..] }
        .iter()
        .map(String::as_str)
        .collect();
    match client.cloud_status_many(&ids).await {
        Ok(devices) => ConnectionReport::ok(format!(
            "Shelly Cloud accepted the auth key; {} of {} device(s) reported",
            devices.len(),
            ids.len()
        )),
        Err(error) => ConnectionReport::failed(format!("Shelly Cloud refused: {error}")),
    }
}
