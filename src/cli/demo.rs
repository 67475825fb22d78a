//! `latchkey demo`: start the server with in-process simulators and print what to open.

use std::time::Instant;

use anyhow::Context;

use crate::config::{DatabaseUrl, Settings};
use crate::demo::{Demo, DemoAdmin, DEMO_ADMIN_EMAIL};
use crate::startup::{self, BuildOptions};
use crate::ui::qr;

/// The demo's own database unless `DATABASE_URL` names one, so trying the demo never
/// writes demo data into `latchkey.db`.
const DEMO_DATABASE: &str = "sqlite://latchkey-demo.db";

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Address to serve on (default: LATCHKEY_LISTEN, else 127.0.0.1:3000).
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
}

pub async fn run(mut settings: Settings, args: DemoArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    if std::env::var_os("DATABASE_URL").is_none() {
        settings.database_url = DatabaseUrl::Sqlite(DEMO_DATABASE.to_string());
    }
    if let Some(listen) = args.listen {
        settings.listen = listen;
    }
    let database = crate::store::redact(settings.database_url.as_str());
    // Held until the process ends: one server per SQLite file.
    let _sqlite_guard = crate::store::single_process::claim(&settings.database_url)?;
    let demo = Demo::start(settings, BuildOptions::default())
        .await
        .context("the demo could not start (is the port free? set LATCHKEY_LISTEN or --listen)")?;
    print_banner(&demo, &database, started.elapsed().as_millis());
    let shutdown = demo.shutdown_token();
    tokio::spawn(async move {
        startup::shutdown_signal().await;
        shutdown.cancel();
    });
    demo.shutdown_token().cancelled().await;
    demo.stop().await
}

fn print_banner(demo: &Demo, database: &str, millis: u128) {
    let pay = demo.pay_url();
    let code = qr::terminal(&pay).unwrap_or_default();
    println!(
        "\nLatchkey demo is running (ready in {millis} ms, database {database}).\n\n\
         Open as a guest:\n  \
         door:   {pay}\n  \
         device: {use_url}\n\n\
         Pay with card 4242 4242 4242 4242 (declined: 4000 0000 0000 0002) on the simulated\n\
         Stripe checkout page; the door code then opens the simulated lock and the device's\n\
         relay switches on.\n\n\
         Simulators:\n  \
         Stripe: {stripe}\n  \
         TTLock: {ttlock}\n  \
         Shelly: {shelly}\n\n\
         Mail sent (receipts, refund notices, resent links, password resets, alerts):\n  \
         {mail}  (SMTP {smtp}; the outbox: {url}/dashboard/mail)\n\n\
         Stickers: {url}/api/doors/{door}/qr.svg  {url}/api/devices/{device}/qr.svg\n\n\
         Operator dashboard: {url}/login\n  {login}\n\n\
         Scan to open the door's pay page:\n{code}\n\
         Ctrl-C stops the demo.\n",
        use_url = demo.use_url(),
        stripe = demo.stripe.url(),
        ttlock = demo.ttlock.base_url(),
        shelly = demo.shelly.base_url(),
        mail = demo.mail_url(),
        smtp = demo.smtp.url(),
        url = demo.url,
        door = crate::demo::DEMO_DOOR_UID,
        device = crate::demo::DEMO_DEVICE_UID,
        login = admin_login(&demo.admin),
    );
}

fn admin_login(admin: &DemoAdmin) -> String {
    match admin {
        DemoAdmin::Created { one_time_password } => format!(
            "email {DEMO_ADMIN_EMAIL}, one-time password {one_time_password}\n  \
             (the first login asks for a new password and enrols an authenticator app)"
        ),
        DemoAdmin::Existing => format!(
            "the accounts of an earlier run ({DEMO_ADMIN_EMAIL}); forgotten the password? \
             `latchkey user reset-password --email {DEMO_ADMIN_EMAIL}`"
        ),
    }
}
