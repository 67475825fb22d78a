//! The words of each mail, as plain text and HTML (multipart/alternative: every mail has
//! both, [`message`] builds them all). English for now; the guest-language work (issue 21
//! item 2) translates these with the pages.

use chrono::{DateTime, Utc};
use latchkey_aggregates::Money;
use lettre::message::header::ContentType;
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::Message;
use maud::{html, Markup};
use serde_json::Value;

use super::outbox::OutboxRow;
use crate::ui::layout::{local_time, money};

/// What a receipt says about the door or device beyond the outbox's facts, looked up
/// from the catalogue when the mail is rendered.
pub struct Place {
    pub name: String,
    pub location: String,
    pub time_zone: String,
}

/// Subject, text and HTML of one mail.
pub struct Content {
    pub subject: String,
    pub text: String,
    pub html: Markup,
}

fn money_of(value: &Value) -> Option<Money> {
    serde_json::from_value(value.clone()).ok()
}

fn time_of(value: &Value) -> Option<DateTime<Utc>> {
    serde_json::from_value(value.clone()).ok()
}

/// The door guest's receipt: what was paid, the code, its window in the door's time zone
/// and the link to the access page (code, QR code, help).
pub fn door_receipt(row: &OutboxRow, door: &Place, link: &str) -> anyhow::Result<Content> {
    let facts = &row.facts;
    let code = facts["code"].as_str().unwrap_or_default();
    let (Some(from), Some(to)) = (time_of(&facts["valid_from"]), time_of(&facts["valid_to"]))
    else {
        anyhow::bail!("the receipt's facts lack the code's window: {facts}");
    };
    let price = money_of(&facts["price"])
        .map(|price| money(&price))
        .unwrap_or_default();
    let window = format!(
        "{} to {} ({})",
        local_time(from, &door.time_zone),
        local_time(to, &door.time_zone),
        door.time_zone
    );
    let subject = format!("Your code for {}", door.name);
    let text = format!(
        "Thank you for your payment of {price}.\n\n\
         Door: {name}, {location}\n\
         Code: {code}\n\
         Valid: {window}\n\n\
         Type the code on the lock's keypad, then press the unlock key.\n\n\
         Your access page shows the code and its QR code again:\n\
         {link}\n\n\
         Keep this email until your visit is over.\n",
        name = door.name,
        location = door.location,
    );
    let html = html! {
        p { "Thank you for your payment of " (price) "." }
        table {
            tr { th { "Door" } td { (door.name) ", " (door.location) } }
            tr { th { "Code" } td { strong { (code) } } }
            tr { th { "Valid" } td { (window) } }
        }
        p { "Type the code on the lock's keypad, then press the unlock key." }
        p { a href=(link) { "Open your access page" } " (the code and its QR code again)." }
        p { "Keep this email until your visit is over." }
    };
    Ok(Content {
        subject,
        text,
        html,
    })
}

/// The refund notice: how much came back, of how much.
pub fn refund_notice(row: &OutboxRow) -> anyhow::Result<Content> {
    let facts = &row.facts;
    let (Some(increase), Some(total), Some(price)) = (
        money_of(&facts["refunded_increase"]),
        money_of(&facts["amount_refunded"]),
        money_of(&facts["price"]),
    ) else {
        anyhow::bail!("the notice's facts lack an amount: {facts}");
    };
    let subject = format!("Your refund of {}", money(&increase));
    let text = format!(
        "We refunded {increase} of your payment of {price}.\n\
         Refunded in total: {total}.\n\n\
         Your bank shows the refund on your card within 5 to 10 days.\n\
         Payment reference: {payment}\n",
        increase = money(&increase),
        price = money(&price),
        total = money(&total),
        payment = row.payment_id,
    );
    let html = html! {
        p { "We refunded " strong { (money(&increase)) } " of your payment of " (money(&price)) "." }
        p { "Refunded in total: " (money(&total)) "." }
        p { "Your bank shows the refund on your card within 5 to 10 days." }
        p { small { "Payment reference: " (row.payment_id) } }
    };
    Ok(Content {
        subject,
        text,
        html,
    })
}

/// The device guest's receipt: what was paid, the plan, when the session started and
/// ends in the device's time zone, and the link to the live session page.
pub fn device_receipt(row: &OutboxRow, device: &Place, link: &str) -> anyhow::Result<Content> {
    let facts = &row.facts;
    let (Some(started), Some(ends)) = (time_of(&facts["started_at"]), time_of(&facts["ends_at"]))
    else {
        anyhow::bail!("the receipt's facts lack the session's times: {facts}");
    };
    let price = money_of(&facts["price"])
        .map(|price| money(&price))
        .unwrap_or_default();
    let plan = facts["plan_name"].as_str().unwrap_or("your plan");
    let zone = &device.time_zone;
    let (from, to) = (local_time(started, zone), local_time(ends, zone));
    let subject = format!("Your session on {}", device.name);
    let text = format!(
        "Thank you for your payment of {price}.\n\n\
         Device: {name}, {location}\n\
         Plan: {plan}\n\
         Started: {from} ({zone})\n\
         Ends: {to} ({zone})\n\n\
         The device switches off by itself at the end. Your session page counts down the\n\
         time left:\n\
         {link}\n",
        name = device.name,
        location = device.location,
    );
    let html = html! {
        p { "Thank you for your payment of " (price) "." }
        table {
            tr { th { "Device" } td { (device.name) ", " (device.location) } }
            tr { th { "Plan" } td { (plan) } }
            tr { th { "Started" } td { (from) " (" (zone) ")" } }
            tr { th { "Ends" } td { strong { (to) } " (" (zone) ")" } }
        }
        p { "The device switches off by itself at the end." }
        p { a href=(link) { "Open your session page" } " (the time left, live)." }
    };
    Ok(Content {
        subject,
        text,
        html,
    })
}

/// "Lost your link?": each recent purchase's page, by name.
pub fn link_resend(links: &[(String, String)]) -> anyhow::Result<Content> {
    if links.is_empty() {
        anyhow::bail!("a resend without any payment");
    }
    let subject = "Your links again".to_string();
    let mut text = String::from(
        "You asked for the links to your recent purchases again. Each opens its page: the\n\
         door code, or the device's session.\n\n",
    );
    for (name, link) in links {
        text.push_str(&format!("{name}:\n{link}\n\n"));
    }
    text.push_str("If you did not ask for this, you can ignore this email.\n");
    let html = html! {
        p { "You asked for the links to your recent purchases again. Each opens its page: the door code, or the device's session." }
        ul { @for (name, link) in links { li { a href=(link) { (name) } } } }
        p { "If you did not ask for this, you can ignore this email." }
    };
    Ok(Content {
        subject,
        text,
        html,
    })
}

/// An operator's password reset link, good once until the time in the facts.
pub fn password_reset(row: &OutboxRow, link: &str) -> anyhow::Result<Content> {
    let Some(expires) = time_of(&row.facts["expires_at"]) else {
        anyhow::bail!("the reset's facts lack its expiry: {}", row.facts);
    };
    let until = expires.format("%H:%M UTC").to_string();
    let subject = "Reset your Latchkey password".to_string();
    let text = format!(
        "Someone (hopefully you) asked to reset the password of the Latchkey account\n\
         {email}.\n\n\
         Choose a new password here (the link works once, until {until}):\n\
         {link}\n\n\
         Your two-factor code is still asked for at the next login.\n\
         If you did not ask for this, ignore this email: your password stays as it is.\n",
        email = row.recipient,
    );
    let html = html! {
        p { "Someone (hopefully you) asked to reset the password of the Latchkey account " strong { (row.recipient) } "." }
        p { a href=(link) { "Choose a new password" } " (the link works once, until " (until) ")." }
        p { "Your two-factor code is still asked for at the next login." }
        p { "If you did not ask for this, ignore this email: your password stays as it is." }
    };
    Ok(Content {
        subject,
        text,
        html,
    })
}

/// An alert to the admins: what failed, for which payment or reaction, and where to act.
pub fn admin_alert(row: &OutboxRow, public_url: &str) -> anyhow::Result<Content> {
    let facts = &row.facts;
    let what = facts["what"].as_str().unwrap_or_default();
    let reason = facts["reason"].as_str().unwrap_or_default();
    let title = match what {
        "PaymentCaptureFailed" => "a capture failed",
        "PaymentCancellationFailed" => "a hold could not be released",
        "AccessCodeIssueFailed" => "a door code could not be issued",
        "AccessCompensationDecided" => "a guest is refunded: no access in time",
        "ReactionParked" => "a workflow reaction is parked",
        other => other,
    };
    let (place, link) = if what == "ReactionParked" {
        let subscriber = facts["subscriber"].as_str().unwrap_or_default();
        let event = facts["event_type"].as_str().unwrap_or_default();
        (
            format!("{subscriber} could not react to {event}"),
            format!("{public_url}/dashboard/parked"),
        )
    } else if row.payment_id.is_empty() {
        (
            format!(
                "{} {}",
                facts["aggregate_type"].as_str().unwrap_or_default(),
                facts["aggregate_id"].as_str().unwrap_or_default()
            ),
            format!("{public_url}/dashboard/audit"),
        )
    } else {
        (
            format!("payment {}", row.payment_id),
            format!("{public_url}/dashboard/payments/{}", row.payment_id),
        )
    };
    let at = time_of(&facts["at"])
        .map(|at| at.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_default();
    let subject = format!("Latchkey alert: {title}");
    let text = format!(
        "Latchkey alert: {title}.\n\n\
         What: {place}\n\
         When: {at}\n\
         Reason: {reason}\n\n\
         Details and actions: {link}\n"
    );
    let html = html! {
        p { strong { "Latchkey alert: " (title) "." } }
        table {
            tr { th { "What" } td { (place) } }
            tr { th { "When" } td { (at) } }
            tr { th { "Reason" } td { (reason) } }
        }
        p { a href=(link) { "Details and actions" } }
    };
    Ok(Content {
        subject,
        text,
        html,
    })
}

/// The message for `content`, from `from` to `to`. The `Message-ID` is the outbox key's,
/// so the same fact's mail is recognisably the same message.
pub fn message(
    row: &OutboxRow,
    from: &Mailbox,
    to: &[Mailbox],
    content: Content,
) -> anyhow::Result<Message> {
    let domain = from.email.domain().to_string();
    let id: String = row
        .mail_key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '.'
            }
        })
        .collect();
    let html = html! {
        (maud::DOCTYPE)
        html lang="en" { head { meta charset="utf-8"; title { (content.subject) } } body { (content.html) } }
    };
    let mut builder = Message::builder().from(from.clone());
    for to in to {
        builder = builder.to(to.clone());
    }
    builder
        .subject(content.subject)
        // Set now and frozen with the rest: a repeat after a crash carries the same Date.
        .date_now()
        .message_id(Some(format!("<{id}@{domain}>")))
        .multipart(
            MultiPart::alternative()
                .singlepart(
                    SinglePart::builder()
                        .header(ContentType::TEXT_PLAIN)
                        .body(content.text),
                )
                .singlepart(
                    SinglePart::builder()
                        .header(ContentType::TEXT_HTML)
                        .body(html.into_string()),
                ),
        )
        .map_err(|error| anyhow::anyhow!("building the message: {error}"))
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use serde_json::json;

    use super::*;
    use crate::mail::outbox::{
        ADMIN_ALERT, DEVICE_RECEIPT, DOOR_RECEIPT, LINK_RESEND, PASSWORD_RESET, REFUND_NOTICE,
    };

    fn row(kind: &str, facts: Value) -> OutboxRow {
        OutboxRow {
            mail_key: format!("{kind}:1"),
            kind: kind.to_string(),
            payment_id: "8d3e6f0a-0000-4000-8000-000000000001".to_string(),
            recipient: "guest@example.com".to_string(),
            facts,
            fact_at: Utc::now(),
            created_at: Utc::now(),
            status: "pending".to_string(),
            attempts: 0,
            next_attempt_at_ms: 0,
            last_error: None,
            sent_at: None,
            frozen: None,
        }
    }

    fn place() -> Place {
        Place {
            name: "Room 12".to_string(),
            location: "Lyon".to_string(),
            time_zone: "Europe/Paris".to_string(),
        }
    }

    /// Every kind of mail is multipart/alternative with a plain-text and an HTML part, and
    /// carries the Message-ID of its key.
    #[test]
    fn every_mail_has_a_text_and_an_html_part() {
        let price = json!({"amount_minor": 1500, "currency": "eur"});
        let now = Utc::now();
        let link = "https://pay.example.com/access/x";
        let contents = vec![
            (
                DOOR_RECEIPT,
                door_receipt(
                    &row(
                        DOOR_RECEIPT,
                        json!({"code": "123456", "valid_from": now, "valid_to": now, "price": price}),
                    ),
                    &place(),
                    link,
                ),
            ),
            (
                DEVICE_RECEIPT,
                device_receipt(
                    &row(
                        DEVICE_RECEIPT,
                        json!({"plan_name": "30 minutes", "started_at": now, "ends_at": now, "price": price}),
                    ),
                    &place(),
                    link,
                ),
            ),
            (
                REFUND_NOTICE,
                refund_notice(&row(
                    REFUND_NOTICE,
                    json!({"refunded_increase": price, "amount_refunded": price, "price": price}),
                )),
            ),
            (
                LINK_RESEND,
                link_resend(&[("Room 12".to_string(), link.to_string())]),
            ),
            (
                PASSWORD_RESET,
                password_reset(&row(PASSWORD_RESET, json!({"expires_at": now})), link),
            ),
            (
                ADMIN_ALERT,
                admin_alert(
                    &row(
                        ADMIN_ALERT,
                        json!({"what": "PaymentCaptureFailed", "reason": "declined", "at": now}),
                    ),
                    "https://pay.example.com",
                ),
            ),
        ];
        let from: Mailbox = "Latchkey <pay@example.com>".parse().unwrap();
        let to: Mailbox = "guest@example.com".parse().unwrap();
        for (kind, content) in contents {
            let content = content.unwrap_or_else(|error| panic!("{kind}: {error}"));
            let message = message(
                &row(kind, Value::Null),
                &from,
                std::slice::from_ref(&to),
                content,
            )
            .unwrap();
            let text = String::from_utf8(message.formatted()).unwrap();
            assert!(text.contains("multipart/alternative"), "{kind}: {text}");
            assert!(text.contains("text/plain"), "{kind}: {text}");
            assert!(text.contains("text/html"), "{kind}: {text}");
            let id = format!("Message-ID: <{}.1@example.com>", kind.replace('_', "."));
            assert!(text.contains(&id), "{kind}: {text}");
            assert!(text.contains("\r\nDate: "), "{kind}: {text}");
        }
    }
}
