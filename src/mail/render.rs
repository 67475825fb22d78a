//! The words of each mail, as plain text and HTML (multipart/alternative). English for
//! now; the guest-language work (issue 21 item 2) translates these with the pages.

use chrono::{DateTime, Utc};
use latchkey_aggregates::Money;
use lettre::message::header::ContentType;
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::Message;
use maud::{html, Markup};
use serde_json::Value;

use super::outbox::OutboxRow;
use crate::ui::layout::{local_time, money};

/// What a door receipt says beyond the outbox's facts, looked up when it is sent.
pub struct Door {
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
pub fn door_receipt(row: &OutboxRow, door: &Door, link: &str) -> anyhow::Result<Content> {
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

/// The message for `content`, from `from` to the row's recipient. The `Message-ID` is the
/// outbox key's, so a repeat after a crash is recognisably the same mail.
pub fn message(row: &OutboxRow, from: &Mailbox, content: Content) -> anyhow::Result<Message> {
    let to: Mailbox = row
        .recipient
        .parse()
        .map_err(|error| anyhow::anyhow!("recipient {:?}: {error}", row.recipient))?;
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
    Message::builder()
        .from(from.clone())
        .to(to)
        .subject(content.subject)
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
