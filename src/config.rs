//! Typed settings from the environment variables listed in API.md.
//!
//! Everything is parsed and validated once, at start-up: a variable that is set but
//! malformed stops the process with a message naming it. A missing integration is not an
//! error; the module reports "not configured" and the flows that need it answer 503.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::str::FromStr;

use secrecy::SecretString;
use url::Url;

/// Where the journal and every read model live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// `postgres://…` or `postgresql://…`: the production and scale-out store.
    Postgres(String),
    /// `sqlite://PATH` (or `sqlite::memory:`): the embedded default.
    Sqlite(String),
}

impl DatabaseUrl {
    pub fn as_str(&self) -> &str {
        match self {
            DatabaseUrl::Postgres(url) | DatabaseUrl::Sqlite(url) => url,
        }
    }
}

impl FromStr for DatabaseUrl {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        if value.starts_with("postgres://") || value.starts_with("postgresql://") {
            Url::parse(value).map_err(|error| format!("not a valid URL: {error}"))?;
            Ok(DatabaseUrl::Postgres(value.to_string()))
        } else if value.starts_with("sqlite:") {
            Ok(DatabaseUrl::Sqlite(value.to_string()))
        } else {
            Err("expected postgres://USER@HOST:PORT/DB or sqlite://PATH".to_string())
        }
    }
}

/// Log output format, from `LATCHKEY_LOG_FORMAT`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Stripe account settings (all optional: Stripe may be configured later in Settings).
#[derive(Clone, Debug, Default)]
pub struct StripeSettings {
    pub secret_key: Option<SecretString>,
    pub publishable_key: Option<String>,
    /// Several during rotation; a delivery is accepted if any of them signed it.
    pub webhook_secrets: Vec<SecretString>,
    pub api_base: Option<Url>,
}

/// TTLock Open API account settings.
#[derive(Clone, Debug, Default)]
pub struct TtlockSettings {
    pub client_id: Option<String>,
    pub client_secret: Option<SecretString>,
    pub username: Option<String>,
    pub password: Option<SecretString>,
    pub api_base: Option<Url>,
}

/// Shelly Cloud settings.
#[derive(Clone, Debug, Default)]
pub struct ShellySettings {
    pub auth_key: Option<SecretString>,
    pub server: Option<Url>,
}

/// How guest pages present the operator (`LATCHKEY_BRAND_*`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrandSettings {
    /// Shown in every page's header and title.
    pub name: String,
    /// An `https://`, `http://` or site-relative (`/…`) image URL.
    pub logo_url: Option<String>,
    /// `#rgb` or `#rrggbb`, the accent of buttons and the header.
    pub colour: String,
}

impl Default for BrandSettings {
    fn default() -> Self {
        BrandSettings {
            name: DEFAULT_BRAND_NAME.to_string(),
            logo_url: None,
            colour: DEFAULT_BRAND_COLOUR.to_string(),
        }
    }
}

pub const DEFAULT_BRAND_NAME: &str = "Latchkey";
pub const DEFAULT_BRAND_COLOUR: &str = "#1f5fbf";

/// All settings of one Latchkey process.
#[derive(Clone, Debug)]
pub struct Settings {
    pub database_url: DatabaseUrl,
    /// Address to serve on; port 0 picks a free port (tests).
    pub listen: SocketAddr,
    /// Base of every link given to guests and to Stripe.
    pub public_url: Url,
    /// Bootstrap bearer token with the admin role.
    pub api_token: Option<SecretString>,
    /// 32-byte key that encrypts stored secrets.
    pub master_key: Option<SecretString>,
    pub stripe: StripeSettings,
    pub ttlock: TtlockSettings,
    pub shelly: ShellySettings,
    pub brand: BrandSettings,
    pub log_format: LogFormat,
    /// Dashboard session timeouts and login rate limits.
    pub accounts: crate::accounts::AccountSettings,
    /// Address policies, the metrics token, API base restrictions and server limits.
    pub security: SecuritySettings,
    /// Signed checkpoints of the journal's global commitment.
    pub ledger: LedgerSettings,
    /// How long a paid guest may wait for access, and a checkout for payment.
    pub access: AccessSettings,
    /// `LATCHKEY_DISPUTE_REVOKES_ACCESS` (default on): a dispute opened by the guest's bank
    /// revokes the payment's door code and force-ends its device session.
    pub dispute_revokes_access: bool,
    /// `LATCHKEY_SMTP_URL`, `LATCHKEY_MAIL_FROM`: outgoing email (none: not configured).
    pub mail: crate::mail::MailSettings,
    /// `LATCHKEY_WEBHOOK_GROUP_COMMIT` (default on): concurrent webhook deliveries share
    /// one inbox transaction (see `store::inbox`); off, each delivery commits on its own.
    pub webhook_group_commit: bool,
}

/// Time limits that keep a guest from paying for nothing (issue 14).
#[derive(Clone, Debug)]
pub struct AccessSettings {
    /// `LATCHKEY_ACCESS_DEADLINE_MINUTES`: after a door payment succeeds, how long its code
    /// may take (maintenance, TTLock or gateway offline) before the guest is refunded.
    pub deadline: std::time::Duration,
    /// `LATCHKEY_CHECKOUT_EXPIRES_MINUTES`: a Checkout Session's lifetime (its
    /// `expires_at`); Stripe accepts 30 minutes to 24 hours.
    pub checkout_expires: std::time::Duration,
}

/// Stripe's bounds on a Checkout Session's `expires_at`, from its creation.
pub const CHECKOUT_EXPIRES_MINUTES_MIN: u64 = 30;
pub const CHECKOUT_EXPIRES_MINUTES_MAX: u64 = 24 * 60;

impl Default for AccessSettings {
    fn default() -> Self {
        AccessSettings {
            deadline: std::time::Duration::from_secs(15 * 60),
            checkout_expires: std::time::Duration::from_secs(30 * 60),
        }
    }
}

/// What the "Security" section of the README describes: who is believed, what may be
/// called, who may scrape, and how much one connection may take.
#[derive(Clone, Debug)]
pub struct SecuritySettings {
    /// `LATCHKEY_DEVICE_NETWORKS`: where calls to LAN device URLs may go.
    pub device_networks: crate::net_policy::DeviceNetworks,
    /// `LATCHKEY_TRUSTED_PROXIES`: whose forwarding headers name the client.
    pub trusted_proxies: crate::net_policy::TrustedProxies,
    /// `LATCHKEY_METRICS_TOKEN`: the bearer token `/metrics` asks for (closed without).
    pub metrics_token: Option<SecretString>,
    /// `LATCHKEY_ALLOWED_API_HOSTS`: hosts an API base saved on the settings page may
    /// name over plain http (besides any https host).
    pub allowed_api_hosts: Vec<String>,
    /// Keep accepting `LATCHKEY_API_TOKEN` after an active admin account exists. Not an
    /// environment variable on purpose: only the test harness sets it, for tests that
    /// create accounts but drive the API with the bootstrap token.
    pub bootstrap_token_always: bool,
    pub limits: ServerLimits,
    /// `LATCHKEY_CHECKOUT_LIMIT_PER_ADDRESS`: checkout starts per client address per minute.
    pub checkout_per_address_per_minute: usize,
    /// `LATCHKEY_CHECKOUT_LIMIT_PER_TARGET`: checkout starts per door or device per minute.
    pub checkout_per_target_per_minute: usize,
}

impl Default for SecuritySettings {
    fn default() -> Self {
        SecuritySettings {
            device_networks: Default::default(),
            trusted_proxies: Default::default(),
            metrics_token: None,
            allowed_api_hosts: Vec::new(),
            bootstrap_token_always: false,
            limits: ServerLimits::default(),
            checkout_per_address_per_minute: crate::http::checkout_limits::PER_ADDRESS_PER_MINUTE,
            checkout_per_target_per_minute: crate::http::checkout_limits::PER_TARGET_PER_MINUTE,
        }
    }
}

/// How much one client may hold of the server (see `src/http/limits.rs`).
#[derive(Clone, Debug)]
pub struct ServerLimits {
    /// A connection whose request headers have not arrived by then is closed.
    pub header_read_timeout: std::time::Duration,
    /// A request not answered by then gets 408.
    pub request_timeout: std::time::Duration,
    /// Connections served at once; more wait in the kernel's accept queue.
    pub max_connections: usize,
    /// Largest request body accepted (webhooks and forms are a few kilobytes).
    pub body_limit_bytes: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            header_read_timeout: std::time::Duration::from_secs(5),
            request_timeout: std::time::Duration::from_secs(30),
            max_connections: 1024,
            body_limit_bytes: 1024 * 1024,
        }
    }
}

/// The verifiable ledger's key and checkpoint cadence (`LATCHKEY_SIGNING_KEY`,
/// `LATCHKEY_CHECKPOINT_EVERY_EVENTS`, `LATCHKEY_CHECKPOINT_EVERY_SECONDS`).
#[derive(Clone, Debug)]
pub struct LedgerSettings {
    /// Without a key the journal is still sealed, but no checkpoint is signed.
    pub signing_key: Option<crate::store::ledger::LedgerKey>,
    /// Sign a checkpoint once this many events were sealed since the last one.
    pub checkpoint_every_events: u64,
    /// Or once this long has passed since the last one, if any event was sealed since.
    pub checkpoint_every: std::time::Duration,
}

impl Default for LedgerSettings {
    fn default() -> Self {
        LedgerSettings {
            signing_key: None,
            checkpoint_every_events: 1_000,
            checkpoint_every: std::time::Duration::from_secs(3_600),
        }
    }
}

/// A variable that is set but cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{variable} is set to an unusable value: {reason}")]
pub struct ConfigError {
    pub variable: &'static str,
    pub reason: String,
}

impl Settings {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(&std::env::vars().collect())
    }

    /// Reads settings from a map of variables, so tests need not touch the process
    /// environment (which is shared by every test thread).
    pub fn from_vars(vars: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let get = |name: &str| vars.get(name).map(|v| v.trim()).filter(|v| !v.is_empty());
        Ok(Settings {
            database_url: parse_or(get("DATABASE_URL"), "DATABASE_URL", "sqlite://latchkey.db")?,
            listen: parse_or(get("LATCHKEY_LISTEN"), "LATCHKEY_LISTEN", "127.0.0.1:3000")?,
            public_url: parse_or(
                get("LATCHKEY_PUBLIC_URL"),
                "LATCHKEY_PUBLIC_URL",
                "http://localhost:3000",
            )?,
            api_token: get("LATCHKEY_API_TOKEN").map(secret),
            master_key: get("LATCHKEY_MASTER_KEY")
                .map(|key| validate_master_key(key).map(|()| secret(key)))
                .transpose()?,
            stripe: StripeSettings {
                secret_key: get("STRIPE_SECRET_KEY")
                    .map(|key| require_prefix(key, "STRIPE_SECRET_KEY", &["sk_", "rk_"]))
                    .transpose()?
                    .map(secret),
                publishable_key: get("STRIPE_PUBLISHABLE_KEY")
                    .map(|key| require_prefix(key, "STRIPE_PUBLISHABLE_KEY", &["pk_"]))
                    .transpose()?
                    .map(str::to_string),
                webhook_secrets: get("STRIPE_WEBHOOK_SECRET")
                    .map(parse_webhook_secrets)
                    .transpose()?
                    .unwrap_or_default(),
                api_base: parse_optional(get("STRIPE_API_BASE"), "STRIPE_API_BASE")?,
            },
            ttlock: TtlockSettings {
                client_id: get("TTLOCK_CLIENT_ID").map(str::to_string),
                client_secret: get("TTLOCK_CLIENT_SECRET").map(secret),
                username: get("TTLOCK_USERNAME").map(str::to_string),
                password: get("TTLOCK_PASSWORD").map(secret),
                api_base: parse_optional(get("TTLOCK_API_BASE"), "TTLOCK_API_BASE")?,
            },
            shelly: ShellySettings {
                auth_key: get("SHELLY_AUTH_KEY").map(secret),
                server: parse_optional(get("SHELLY_SERVER"), "SHELLY_SERVER")?,
            },
            brand: BrandSettings {
                name: get("LATCHKEY_BRAND_NAME")
                    .map(parse_brand_name)
                    .transpose()?
                    .unwrap_or_else(|| DEFAULT_BRAND_NAME.to_string()),
                logo_url: get("LATCHKEY_BRAND_LOGO_URL")
                    .map(parse_logo_url)
                    .transpose()?,
                colour: get("LATCHKEY_BRAND_COLOUR")
                    .map(parse_colour)
                    .transpose()?
                    .unwrap_or_else(|| DEFAULT_BRAND_COLOUR.to_string()),
            },
            accounts: crate::accounts::AccountSettings {
                session_idle: minutes(
                    get("LATCHKEY_SESSION_IDLE_MINUTES"),
                    "LATCHKEY_SESSION_IDLE_MINUTES",
                    30,
                )?,
                session_lifetime: minutes(
                    get("LATCHKEY_SESSION_LIFETIME_HOURS"),
                    "LATCHKEY_SESSION_LIFETIME_HOURS",
                    12,
                )?
                .saturating_mul(60),
                ..Default::default()
            },
            security: SecuritySettings {
                device_networks: crate::net_policy::DeviceNetworks::new(cidrs(
                    get("LATCHKEY_DEVICE_NETWORKS")
                        .unwrap_or(crate::net_policy::DEFAULT_DEVICE_NETWORKS),
                    "LATCHKEY_DEVICE_NETWORKS",
                )?),
                trusted_proxies: crate::net_policy::TrustedProxies::new(cidrs(
                    get("LATCHKEY_TRUSTED_PROXIES").unwrap_or(""),
                    "LATCHKEY_TRUSTED_PROXIES",
                )?),
                metrics_token: get("LATCHKEY_METRICS_TOKEN").map(secret),
                allowed_api_hosts: get("LATCHKEY_ALLOWED_API_HOSTS")
                    .map(|hosts| {
                        hosts
                            .split(',')
                            .map(|host| host.trim().to_ascii_lowercase())
                            .filter(|host| !host.is_empty())
                            .collect()
                    })
                    .unwrap_or_default(),
                bootstrap_token_always: false,
                checkout_per_address_per_minute: positive(
                    get("LATCHKEY_CHECKOUT_LIMIT_PER_ADDRESS"),
                    "LATCHKEY_CHECKOUT_LIMIT_PER_ADDRESS",
                    crate::http::checkout_limits::PER_ADDRESS_PER_MINUTE,
                )?,
                checkout_per_target_per_minute: positive(
                    get("LATCHKEY_CHECKOUT_LIMIT_PER_TARGET"),
                    "LATCHKEY_CHECKOUT_LIMIT_PER_TARGET",
                    crate::http::checkout_limits::PER_TARGET_PER_MINUTE,
                )?,
                limits: ServerLimits {
                    max_connections: positive(
                        get("LATCHKEY_MAX_CONNECTIONS"),
                        "LATCHKEY_MAX_CONNECTIONS",
                        ServerLimits::default().max_connections,
                    )?,
                    ..ServerLimits::default()
                },
            },
            ledger: LedgerSettings {
                signing_key: get("LATCHKEY_SIGNING_KEY")
                    .map(|seed| {
                        crate::store::ledger::LedgerKey::from_base64_seed(seed).map_err(|reason| {
                            ConfigError {
                                variable: "LATCHKEY_SIGNING_KEY",
                                reason,
                            }
                        })
                    })
                    .transpose()?,
                checkpoint_every_events: positive(
                    get("LATCHKEY_CHECKPOINT_EVERY_EVENTS"),
                    "LATCHKEY_CHECKPOINT_EVERY_EVENTS",
                    1_000,
                )?,
                checkpoint_every: std::time::Duration::from_secs(positive(
                    get("LATCHKEY_CHECKPOINT_EVERY_SECONDS"),
                    "LATCHKEY_CHECKPOINT_EVERY_SECONDS",
                    3_600,
                )?),
            },
            access: AccessSettings {
                deadline: minutes(
                    get("LATCHKEY_ACCESS_DEADLINE_MINUTES"),
                    "LATCHKEY_ACCESS_DEADLINE_MINUTES",
                    15,
                )?,
                checkout_expires: checkout_expires(get("LATCHKEY_CHECKOUT_EXPIRES_MINUTES"))?,
            },
            dispute_revokes_access: switch(
                get("LATCHKEY_DISPUTE_REVOKES_ACCESS"),
                "LATCHKEY_DISPUTE_REVOKES_ACCESS",
                true,
            )?,
            mail: crate::mail::MailSettings {
                smtp_url: get("LATCHKEY_SMTP_URL")
                    .map(|url| {
                        crate::mail::parse_smtp_url(url).map_err(|reason| ConfigError {
                            variable: "LATCHKEY_SMTP_URL",
                            reason,
                        })
                    })
                    .transpose()?,
                from: get("LATCHKEY_MAIL_FROM")
                    .map(|from| {
                        crate::mail::parse_from(from).map_err(|reason| ConfigError {
                            variable: "LATCHKEY_MAIL_FROM",
                            reason,
                        })
                    })
                    .transpose()?,
            },
            webhook_group_commit: switch(
                get("LATCHKEY_WEBHOOK_GROUP_COMMIT"),
                "LATCHKEY_WEBHOOK_GROUP_COMMIT",
                true,
            )?,
            log_format: match get("LATCHKEY_LOG_FORMAT") {
                None | Some("text") => LogFormat::Text,
                Some("json") => LogFormat::Json,
                Some(other) => {
                    return Err(ConfigError {
                        variable: "LATCHKEY_LOG_FORMAT",
                        reason: format!("{other:?} is neither \"text\" nor \"json\""),
                    })
                }
            },
        })
    }
}

/// An on/off switch: `true`/`false`, `on`/`off`, `1`/`0`, `yes`/`no`.
fn switch(value: Option<&str>, variable: &'static str, default: bool) -> Result<bool, ConfigError> {
    match value.map(str::to_ascii_lowercase).as_deref() {
        None => Ok(default),
        Some("true" | "on" | "1" | "yes") => Ok(true),
        Some("false" | "off" | "0" | "no") => Ok(false),
        Some(other) => Err(ConfigError {
            variable,
            reason: format!("{other:?} is not one of true, false, on, off, 1, 0, yes, no"),
        }),
    }
}

/// A positive whole number (a count of events, seconds, connections, requests…).
fn positive<T>(value: Option<&str>, variable: &'static str, default: T) -> Result<T, ConfigError>
where
    T: std::str::FromStr + PartialOrd + From<u8>,
{
    match value {
        None => Ok(default),
        Some(raw) => match raw.parse::<T>() {
            Ok(count) if count > T::from(0) => Ok(count),
            _ => Err(ConfigError {
                variable,
                reason: format!("{raw:?} is not a positive whole number"),
            }),
        },
    }
}

/// A positive whole number of minutes (or of hours, scaled by the caller).
fn minutes(
    value: Option<&str>,
    variable: &'static str,
    default: u64,
) -> Result<std::time::Duration, ConfigError> {
    let count = match value {
        None => default,
        Some(raw) => match raw.parse::<u64>() {
            Ok(count) if count > 0 => count,
            _ => {
                return Err(ConfigError {
                    variable,
                    reason: format!("{raw:?} is not a positive whole number"),
                })
            }
        },
    };
    Ok(std::time::Duration::from_secs(count.saturating_mul(60)))
}

/// `LATCHKEY_CHECKOUT_EXPIRES_MINUTES` within Stripe's bounds (default 30).
fn checkout_expires(value: Option<&str>) -> Result<std::time::Duration, ConfigError> {
    let variable = "LATCHKEY_CHECKOUT_EXPIRES_MINUTES";
    let duration = minutes(value, variable, CHECKOUT_EXPIRES_MINUTES_MIN)?;
    let bounds = CHECKOUT_EXPIRES_MINUTES_MIN * 60..=CHECKOUT_EXPIRES_MINUTES_MAX * 60;
    if !bounds.contains(&duration.as_secs()) {
        return Err(ConfigError {
            variable,
            reason: format!(
                "Stripe expires a Checkout Session {CHECKOUT_EXPIRES_MINUTES_MIN} to {CHECKOUT_EXPIRES_MINUTES_MAX} minutes after its creation"
            ),
        });
    }
    Ok(duration)
}

/// A comma-separated list of CIDR ranges.
fn cidrs(value: &str, variable: &'static str) -> Result<Vec<crate::net_policy::Cidr>, ConfigError> {
    crate::net_policy::parse_cidrs(value).map_err(|reason| ConfigError { variable, reason })
}

/// A brand name fits in a page header: at most 80 characters, no control characters.
fn parse_brand_name(value: &str) -> Result<String, ConfigError> {
    if value.chars().count() > 80 || value.chars().any(char::is_control) {
        return Err(ConfigError {
            variable: "LATCHKEY_BRAND_NAME",
            reason: "expected at most 80 printable characters".to_string(),
        });
    }
    Ok(value.to_string())
}

/// A logo is an absolute http(s) URL or a path on this site.
fn parse_logo_url(value: &str) -> Result<String, ConfigError> {
    let site_relative = value.starts_with('/') && !value.starts_with("//");
    let absolute = Url::parse(value)
        .map(|url| matches!(url.scheme(), "http" | "https"))
        .unwrap_or(false);
    if site_relative || absolute {
        Ok(value.to_string())
    } else {
        Err(ConfigError {
            variable: "LATCHKEY_BRAND_LOGO_URL",
            reason: format!("{value:?} is neither an http(s) URL nor a path starting with /"),
        })
    }
}

/// Colours are CSS hex colours, so they can go into a style attribute as they are.
fn parse_colour(value: &str) -> Result<String, ConfigError> {
    let digits = value.strip_prefix('#').unwrap_or("");
    if matches!(digits.len(), 3 | 6) && digits.bytes().all(|byte| byte.is_ascii_hexdigit()) {
        Ok(value.to_ascii_lowercase())
    } else {
        Err(ConfigError {
            variable: "LATCHKEY_BRAND_COLOUR",
            reason: format!("{value:?} is not a hex colour like #1f5fbf"),
        })
    }
}

fn secret(value: &str) -> SecretString {
    SecretString::from(value.to_string())
}

fn parse_or<T>(value: Option<&str>, variable: &'static str, default: &str) -> Result<T, ConfigError>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    let raw = value.unwrap_or(default);
    raw.parse().map_err(|error: T::Err| ConfigError {
        variable,
        reason: format!("{raw:?}: {error}"),
    })
}

fn parse_optional<T>(value: Option<&str>, variable: &'static str) -> Result<Option<T>, ConfigError>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    value
        .map(|raw| {
            raw.parse().map_err(|error: T::Err| ConfigError {
                variable,
                reason: format!("{raw:?}: {error}"),
            })
        })
        .transpose()
}

fn require_prefix<'a>(
    value: &'a str,
    variable: &'static str,
    prefixes: &[&str],
) -> Result<&'a str, ConfigError> {
    if prefixes.iter().any(|prefix| value.starts_with(prefix)) {
        Ok(value)
    } else {
        Err(ConfigError {
            variable,
            reason: format!("expected a key starting with {}", prefixes.join(" or ")),
        })
    }
}

fn parse_webhook_secrets(value: &str) -> Result<Vec<SecretString>, ConfigError> {
    value
        .split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(|part| require_prefix(part, "STRIPE_WEBHOOK_SECRET", &["whsec_"]).map(secret))
        .collect()
}

/// The master key is 32 bytes, written as standard base64 (44 characters with padding).
fn validate_master_key(value: &str) -> Result<(), ConfigError> {
    let bytes = decode_base64(value).ok_or_else(|| ConfigError {
        variable: "LATCHKEY_MASTER_KEY",
        reason: "not valid base64 (generate one with `openssl rand -base64 32`)".to_string(),
    })?;
    if bytes.len() != 32 {
        return Err(ConfigError {
            variable: "LATCHKEY_MASTER_KEY",
            reason: format!("decodes to {} bytes; 32 are required", bytes.len()),
        });
    }
    Ok(())
}

/// Minimal standard-alphabet base64 decoder; enough for one key and no extra dependency.
pub(crate) fn decode_base64(value: &str) -> Option<Vec<u8>> {
    let digits: Vec<u8> = value.trim_end_matches('=').bytes().collect();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    let mut buffer: u32 = 0;
    let mut bits = 0;
    for digit in digits {
        let sextet = match digit {
            b'A'..=b'Z' => digit - b'A',
            b'a'..=b'z' => digit - b'a' + 26,
            b'0'..=b'9' => digit - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        buffer = (buffer << 6) | u32::from(sextet);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
            buffer &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_apply_when_nothing_is_set() {
        let settings = Settings::from_vars(&vars(&[])).unwrap();
        assert_eq!(
            settings.database_url,
            DatabaseUrl::Sqlite("sqlite://latchkey.db".into())
        );
        assert_eq!(settings.listen.to_string(), "127.0.0.1:3000");
        assert_eq!(settings.public_url.as_str(), "http://localhost:3000/");
        assert!(settings.stripe.secret_key.is_none());
    }

    #[test]
    fn access_deadline_and_checkout_lifetime_default_and_stay_in_stripes_bounds() {
        let settings = Settings::from_vars(&vars(&[])).unwrap();
        assert_eq!(settings.access.deadline.as_secs(), 15 * 60);
        assert_eq!(settings.access.checkout_expires.as_secs(), 30 * 60);
        let settings = Settings::from_vars(&vars(&[
            ("LATCHKEY_ACCESS_DEADLINE_MINUTES", "5"),
            ("LATCHKEY_CHECKOUT_EXPIRES_MINUTES", "1440"),
        ]))
        .unwrap();
        assert_eq!(settings.access.deadline.as_secs(), 300);
        assert_eq!(settings.access.checkout_expires.as_secs(), 86_400);
        for too_short_or_long in ["29", "1441"] {
            let error = Settings::from_vars(&vars(&[(
                "LATCHKEY_CHECKOUT_EXPIRES_MINUTES",
                too_short_or_long,
            )]))
            .unwrap_err();
            assert_eq!(error.variable, "LATCHKEY_CHECKOUT_EXPIRES_MINUTES");
        }
    }

    #[test]
    fn email_needs_both_variables_and_refuses_malformed_ones() {
        let settings = Settings::from_vars(&vars(&[])).unwrap();
        assert!(settings.mail.smtp_url.is_none() && settings.mail.from.is_none());
        let settings = Settings::from_vars(&vars(&[
            (
                "LATCHKEY_SMTP_URL",
                "smtp://user:pass@mail.example.com:587?tls=starttls",
            ),
            ("LATCHKEY_MAIL_FROM", "Latchkey <pay@example.com>"),
        ]))
        .unwrap();
        assert!(settings.mail.smtp_url.is_some() && settings.mail.from.is_some());
        let error =
            Settings::from_vars(&vars(&[("LATCHKEY_SMTP_URL", "mail.example.com")])).unwrap_err();
        assert_eq!(error.variable, "LATCHKEY_SMTP_URL");
        let error = Settings::from_vars(&vars(&[("LATCHKEY_MAIL_FROM", "nobody")])).unwrap_err();
        assert_eq!(error.variable, "LATCHKEY_MAIL_FROM");
    }

    #[test]
    fn session_timeouts_come_from_minutes_and_hours() {
        let settings = Settings::from_vars(&vars(&[
            ("LATCHKEY_SESSION_IDLE_MINUTES", "5"),
            ("LATCHKEY_SESSION_LIFETIME_HOURS", "2"),
        ]))
        .unwrap();
        assert_eq!(settings.accounts.session_idle.as_secs(), 300);
        assert_eq!(settings.accounts.session_lifetime.as_secs(), 7200);
        let error =
            Settings::from_vars(&vars(&[("LATCHKEY_SESSION_IDLE_MINUTES", "0")])).unwrap_err();
        assert_eq!(error.variable, "LATCHKEY_SESSION_IDLE_MINUTES");
    }

    #[test]
    fn branding_has_defaults_and_is_validated() {
        let settings = Settings::from_vars(&vars(&[])).unwrap();
        assert_eq!(settings.brand, BrandSettings::default());
        let settings = Settings::from_vars(&vars(&[
            ("LATCHKEY_BRAND_NAME", "Sauna Co"),
            ("LATCHKEY_BRAND_LOGO_URL", "https://example.com/logo.png"),
            ("LATCHKEY_BRAND_COLOUR", "#A1B2C3"),
        ]))
        .unwrap();
        assert_eq!(settings.brand.name, "Sauna Co");
        assert_eq!(settings.brand.colour, "#a1b2c3");
        for (variable, value) in [
            ("LATCHKEY_BRAND_COLOUR", "red"),
            ("LATCHKEY_BRAND_COLOUR", "#12345"),
            ("LATCHKEY_BRAND_COLOUR", "#1234zz"),
            ("LATCHKEY_BRAND_LOGO_URL", "javascript:alert(1)"),
            ("LATCHKEY_BRAND_LOGO_URL", "//evil.example/logo.png"),
            ("LATCHKEY_BRAND_NAME", &"x".repeat(81)),
        ] {
            let error = Settings::from_vars(&vars(&[(variable, value)])).unwrap_err();
            assert_eq!(error.variable, variable, "{value}");
        }
    }

    #[test]
    fn a_malformed_listen_address_names_the_variable() {
        let error = Settings::from_vars(&vars(&[("LATCHKEY_LISTEN", "port 80")])).unwrap_err();
        assert_eq!(error.variable, "LATCHKEY_LISTEN");
        assert!(error.to_string().contains("LATCHKEY_LISTEN"));
    }

    #[test]
    fn an_unknown_database_scheme_is_refused() {
        let error = Settings::from_vars(&vars(&[("DATABASE_URL", "mysql://x")])).unwrap_err();
        assert_eq!(error.variable, "DATABASE_URL");
    }

    #[test]
    fn webhook_secrets_split_on_commas_and_must_look_like_secrets() {
        let settings =
            Settings::from_vars(&vars(&[("STRIPE_WEBHOOK_SECRET", "whsec_a, whsec_b")])).unwrap();
        assert_eq!(settings.stripe.webhook_secrets.len(), 2);
        let error =
            Settings::from_vars(&vars(&[("STRIPE_WEBHOOK_SECRET", "whsec_a,oops")])).unwrap_err();
        assert_eq!(error.variable, "STRIPE_WEBHOOK_SECRET");
    }

    #[test]
    fn the_master_key_must_be_32_bytes_of_base64() {
        let good = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
        assert!(Settings::from_vars(&vars(&[("LATCHKEY_MASTER_KEY", good)])).is_ok());
        let short = Settings::from_vars(&vars(&[("LATCHKEY_MASTER_KEY", "AAEC")])).unwrap_err();
        assert_eq!(short.variable, "LATCHKEY_MASTER_KEY");
        let garbage = Settings::from_vars(&vars(&[("LATCHKEY_MASTER_KEY", "***")])).unwrap_err();
        assert!(garbage.reason.contains("base64"));
    }

    #[test]
    fn a_live_key_in_the_wrong_variable_is_refused() {
        let error =
            Settings::from_vars(&vars(&[("STRIPE_SECRET_KEY", "pk_test_123")])).unwrap_err();
        assert_eq!(error.variable, "STRIPE_SECRET_KEY");
    }

    #[test]
    fn a_dispute_revokes_access_unless_switched_off() {
        let default = Settings::from_vars(&vars(&[])).unwrap();
        assert!(default.dispute_revokes_access);
        let off = Settings::from_vars(&vars(&[("LATCHKEY_DISPUTE_REVOKES_ACCESS", "off")]));
        assert!(!off.unwrap().dispute_revokes_access);
        let bad = Settings::from_vars(&vars(&[("LATCHKEY_DISPUTE_REVOKES_ACCESS", "maybe")]));
        assert_eq!(bad.unwrap_err().variable, "LATCHKEY_DISPUTE_REVOKES_ACCESS");
    }

    #[test]
    fn webhook_group_commit_is_on_unless_switched_off() {
        let default = Settings::from_vars(&vars(&[])).unwrap();
        assert!(default.webhook_group_commit);
        let off = Settings::from_vars(&vars(&[("LATCHKEY_WEBHOOK_GROUP_COMMIT", "off")]));
        assert!(!off.unwrap().webhook_group_commit);
    }
}
