//! `latchkey demo`: the whole product on one machine. The Stripe, TTLock and Shelly
//! simulators run in-process on free ports, the server's clients point at them, Stripe's
//! webhooks come back to the server, its mail goes to an in-process SMTP sink whose page
//! lists what was sent, and one door (a lock with a gateway) and one device
//! (a smart plug with two plans) are registered if they are not yet.
//!
//! [`Demo::start`] is shared by the command and the browser tests, so the tests exercise
//! exactly what a newcomer runs.

use std::net::SocketAddr;

use anyhow::Context;
use chrono::Utc;
use latchkey_aggregates::device::{DeviceCommand, UsagePlan};
use latchkey_aggregates::door::DoorCommand;
use latchkey_aggregates::{Actor, Currency, Money};
use secrecy::SecretString;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::accounts::{password, users};
use crate::config::Settings;
use crate::cqrs::CommandMetadata;
use crate::http::auth::Role;
use crate::http::AppState;
use crate::sim::shelly::{ShellySimConfig, ShellySimHandle};
use crate::sim::smtp::SmtpSink;
use crate::sim::stripe::{StripeSimConfig, StripeSimHandle};
use crate::sim::ttlock::{TtlockSimConfig, TtlockSimHandle};
use crate::startup::{Application, BuildOptions};

/// The simulator's lock with a gateway (codes can be deleted remotely).
pub const DEMO_DOOR_UID: &str = "4410021";
pub const DEMO_DEVICE_UID: &str = "sauna";
/// The simulator's one-channel smart plug.
pub const DEMO_SHELLY_ID: &str = "3c61052d7e90";
const DEMO_STRIPE_KEY: &str = "sk_test_latchkey_demo";
const DEMO_WEBHOOK_SECRET: &str = "whsec_latchkey_demo";
/// The operator account the demo creates on its first run, so the dashboard can be
/// tried right away.
pub const DEMO_ADMIN_EMAIL: &str = "admin@latchkey.demo";

/// How to log in to the demo's dashboard.
#[derive(Debug, Clone)]
pub enum DemoAdmin {
    /// Created by this run: a one-time password, shown once. The first login asks for a
    /// new password and enrols an authenticator app.
    Created { one_time_password: String },
    /// Created by an earlier run on this database; its owner chose the password.
    Existing,
}

/// The sender of the demo's mail.
const DEMO_MAIL_FROM: &str = "Latchkey demo <pay@latchkey.demo>";

/// A running demo: the server, the three simulators and the SMTP sink.
pub struct Demo {
    /// `http://127.0.0.1:PORT`, the server's public URL.
    pub url: String,
    pub state: AppState,
    pub stripe: StripeSimHandle,
    pub ttlock: TtlockSimHandle,
    pub shelly: ShellySimHandle,
    /// Receives every mail the server sends; its page lists them.
    pub smtp: SmtpSink,
    pub admin: DemoAdmin,
    shutdown: CancellationToken,
    server: JoinHandle<anyhow::Result<()>>,
}

impl Demo {
    /// Starts the simulators and the server (on `settings`' database and listen address,
    /// with every integration replaced by a simulator), and seeds the catalogue.
    pub async fn start(mut settings: Settings, options: BuildOptions) -> anyhow::Result<Demo> {
        let stripe = crate::sim::stripe::spawn(
            local_listener().await?,
            StripeSimConfig::new(DEMO_STRIPE_KEY, vec![DEMO_WEBHOOK_SECRET.to_string()]),
        )?;
        let ttlock_config = TtlockSimConfig::default();
        let ttlock = crate::sim::ttlock::spawn(local_listener().await?, ttlock_config.clone())?;
        let shelly_config = ShellySimConfig::default();
        let shelly = crate::sim::shelly::spawn(local_listener().await?, shelly_config.clone())?;
        let mut smtp = SmtpSink::spawn(local_listener().await?)?;
        smtp.serve_web(local_listener().await?)?;

        settings.listen = concrete_listen_address(settings.listen)?;
        let url = format!("http://{}", settings.listen);
        settings.public_url = url.parse().context("the demo's public URL")?;
        settings.stripe.secret_key = Some(SecretString::from(DEMO_STRIPE_KEY));
        settings.stripe.publishable_key = None;
        settings.stripe.webhook_secrets = vec![SecretString::from(DEMO_WEBHOOK_SECRET)];
        settings.stripe.api_base = Some(stripe.url().parse().context("the Stripe simulator URL")?);
        settings.ttlock.api_base = Some(ttlock.base_url().clone());
        settings.ttlock.client_id = Some(ttlock_config.client_id.clone());
        settings.ttlock.client_secret = Some(ttlock_config.client_secret.clone());
        settings.ttlock.username = Some(ttlock_config.username.clone());
        settings.ttlock.password = Some(ttlock_config.password.clone());
        settings.shelly.server = Some(shelly.base_url().clone());
        settings.shelly.auth_key = Some(shelly_config.auth_key.clone());
        settings.mail.smtp_url =
            Some(crate::mail::parse_smtp_url(&smtp.url()).map_err(anyhow::Error::msg)?);
        settings.mail.from =
            Some(crate::mail::parse_from(DEMO_MAIL_FROM).map_err(anyhow::Error::msg)?);

        let application = Application::build_with(settings, options).await?;
        let state = application.state().clone();
        stripe.set_webhook_url(format!("{url}/api/stripe/webhook"));
        seed(&state).await?;
        let admin = seed_admin(&state).await?;
        let shutdown = application.shutdown_token();
        let server = tokio::spawn(application.run_until_stopped());
        Ok(Demo {
            url,
            state,
            stripe,
            ttlock,
            shelly,
            smtp,
            admin,
            shutdown,
            server,
        })
    }

    pub fn pay_url(&self) -> String {
        format!("{}/pay/{DEMO_DOOR_UID}", self.url)
    }

    /// The page listing every mail the demo sent.
    pub fn mail_url(&self) -> String {
        self.smtp.web_url().unwrap_or_default()
    }

    pub fn use_url(&self) -> String {
        format!("{}/use/{DEMO_DEVICE_UID}", self.url)
    }

    /// Cancelling it stops the server gracefully.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stops the server (draining requests) and the simulators.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        let served = self.server.await.context("the server task")?;
        self.stripe.stop().await;
        self.ttlock.shutdown().await;
        self.shelly.shutdown().await;
        self.smtp.shutdown().await;
        served
    }
}

async fn local_listener() -> anyhow::Result<TcpListener> {
    TcpListener::bind("127.0.0.1:0")
        .await
        .context("could not open a port on 127.0.0.1 for a simulator")
}

/// Guests' links must carry the real port, so port 0 ("any") is resolved to a free
/// port first.
fn concrete_listen_address(listen: SocketAddr) -> anyhow::Result<SocketAddr> {
    if listen.port() != 0 {
        return Ok(listen);
    }
    let probe = std::net::TcpListener::bind(listen)
        .with_context(|| format!("could not listen on {listen}"))?;
    Ok(probe.local_addr()?)
}

/// Registers the demo door and device unless a previous run did.
async fn seed(state: &AppState) -> anyhow::Result<()> {
    let metadata = CommandMetadata::new(Actor::System.to_string(), "demo");
    let eur = Currency::parse("eur").context("eur is a currency")?;
    let (door, _) = state.buses.doors.load(DEMO_DOOR_UID).await?;
    if !door.is_registered() {
        let command = DoorCommand::RegisterDoor {
            door_uid: DEMO_DOOR_UID.to_string(),
            lock_id: DEMO_DOOR_UID.parse().context("the demo lock id")?,
            name: "Guest room 12".to_string(),
            location: "Demo House, Lyon".to_string(),
            time_zone: "Europe/Paris".to_string(),
            price: Money::new(1500, eur.clone()),
            access_minutes: 120,
            actor: Actor::System,
            at: Utc::now(),
        };
        state
            .buses
            .doors
            .execute(DEMO_DOOR_UID, command, metadata.clone())
            .await
            .context("registering the demo door")?;
    }
    let (device, _) = state.buses.devices.load(DEMO_DEVICE_UID).await?;
    if !device.is_registered() {
        let plan = |plan_id: &str, name: &str, minutes: u32, price: i64| UsagePlan {
            plan_id: plan_id.to_string(),
            name: name.to_string(),
            minutes,
            price: Money::new(price, eur.clone()),
        };
        let command = DeviceCommand::RegisterDevice {
            device_uid: DEMO_DEVICE_UID.to_string(),
            name: "Sauna".to_string(),
            location: "Demo House, Lyon".to_string(),
            time_zone: "Europe/Paris".to_string(),
            shelly_device_id: DEMO_SHELLY_ID.to_string(),
            shelly_channel: 0,
            plans: vec![
                plan("short", "Quick sweat", 15, 500),
                plan("long", "Full session", 45, 1200),
            ],
            actor: Actor::System,
            at: Utc::now(),
        };
        state
            .buses
            .devices
            .execute(DEMO_DEVICE_UID, command, metadata)
            .await
            .context("registering the demo device")?;
    }
    Ok(())
}

/// Creates the demo admin with a one-time password unless a previous run did. Only a
/// database without any user gets one: the demo never adds an account beside real ones.
async fn seed_admin(state: &AppState) -> anyhow::Result<DemoAdmin> {
    let database = &state.database;
    if !users::list(database).await?.is_empty() {
        return Ok(DemoAdmin::Existing);
    }
    let one_time_password = password::one_time();
    let hash = password::hash(&one_time_password)?;
    users::create(database, DEMO_ADMIN_EMAIL, Role::Admin, &hash, true)
        .await
        .map_err(|error| anyhow::anyhow!("creating the demo admin: {error}"))?;
    Ok(DemoAdmin::Created { one_time_password })
}
