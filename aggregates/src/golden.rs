//! Golden events: a contract that today's code still reads every event ever shipped.
//!
//! `tests/fixtures/events/{Aggregate}/{EventType}.v{version}.json` holds one payload of
//! every event type at every version. The test here
//! - lists every variant of every event enum (from serde's own "expected one of" list, so
//!   a new variant is noticed without anyone registering it) and requires a golden file
//!   for its current version: missing → it fails, saying how to write one;
//! - reads every golden file through the upcasters into today's enum and serializes it
//!   back: every field of the golden payload must come back with the same value. A
//!   renamed, removed or retyped field fails; a new `#[serde(default)]` field passes.
//!
//! To add a golden file for a new event type or version: add a sample of it to
//! [`samples`], then `BLESS_EVENTS=1 cargo test -p latchkey-aggregates golden`. That
//! writes only missing files; existing ones are never rewritten (they are the contract).

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

use crate::device::DeviceEvent;
use crate::door::DoorEvent;
use crate::payment::PaymentEvent;
use crate::session::SessionEvent;
use crate::upcast;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/events")
}

/// Samples written by `BLESS_EVENTS=1` for golden files that do not exist yet, as
/// `(aggregate type, payload)`. Add one here when you add an event type or version.
fn samples() -> Vec<(&'static str, Value)> {
    let at = "2026-12-03T10:00:00Z";
    let session_id = "5b0c8a4e-0a51-4b8e-9f0e-8f8f3c1d2e10";
    let stripe_event = json!({"id": "evt_1QdisputeA", "created": "2026-12-03T09:59:00Z"});
    vec![
        (
            "Payment",
            json!({"type": "PaymentAmountMismatch",
                   "expected": {"amount_minor": 1250, "currency": "kwd"},
                   "reported": {"amount_minor": 1000, "currency": "kwd"},
                   "direction": "below", "report": "success",
                   "stripe_event": stripe_event, "at": at}),
        ),
        (
            "Payment",
            json!({"type": "PaymentAccessGranted", "reason": "the guest paid the rest at the desk",
                   "actor": {"kind": "operator", "id": "alice"}, "at": at}),
        ),
        (
            "Payment",
            json!({"type": "DisputeFundsWithdrawn", "dispute_id": "dp_1QdisputeA",
                   "amount": {"amount_minor": 500, "currency": "jpy"},
                   "stripe_event": stripe_event, "at": at}),
        ),
        (
            "Payment",
            json!({"type": "DisputeFundsReinstated", "dispute_id": "dp_1QdisputeA",
                   "amount": {"amount_minor": 500, "currency": "jpy"},
                   "stripe_event": stripe_event, "at": at}),
        ),
        (
            "Payment",
            json!({"type": "DisputeClosed", "dispute_id": "dp_1QdisputeA", "status": "won",
                   "stripe_event": stripe_event, "at": at}),
        ),
        (
            "Payment",
            json!({"type": "RefundSubmissionFailed",
                   "refund_request_id": "bcc50965-6546-4fed-bb6e-d018af55fb4d",
                   "reason": "Stripe refused the refund: charge already refunded", "at": at}),
        ),
        (
            "Payment",
            json!({"type": "PaymentCaptureOrdered", "payment_intent_id": "pi_3Q0golden",
                   "amount_to_capture": {"amount_minor": 300, "currency": "eur"},
                   "actor": {"kind": "system"}, "at": at}),
        ),
        (
            "Payment",
            json!({"type": "PaymentCaptureFailed", "payment_intent_id": "pi_3Q0golden",
                   "reason": "Stripe refused the request (HTTP 402, card_error, card_declined): Your card was declined.",
                   "at": at}),
        ),
        (
            "Payment",
            json!({"type": "PaymentCancellationOrdered", "payment_intent_id": "pi_3Q0golden",
                   "reason": "the device did not start; the guest is not charged",
                   "actor": {"kind": "system"}, "at": at}),
        ),
        (
            "Payment",
            json!({"type": "PaymentCancellationFailed", "payment_intent_id": "pi_3Q0golden",
                   "reason": "payment_intent_unexpected_state: already succeeded", "at": at}),
        ),
        (
            "Door",
            json!({"type": "AccessCodeRevocationPending",
                   "payment_id": "a10a5ff6-db0d-44f4-b9cb-edd37d8f1b54", "passcode_id": 90412201,
                   "reason": "the payment was refunded in full", "attempt": 2,
                   "error": "TTLock answered -3003", "actor": {"kind": "system"}, "at": at}),
        ),
        (
            "Door",
            json!({"type": "AccessCompensationDecided",
                   "payment_id": "a10a5ff6-db0d-44f4-b9cb-edd37d8f1b54",
                   "rule": "deadline_passed",
                   "refund_request_id": "0f5b8a52-3a43-4f57-a8f6-6f1f0f6c0a11",
                   "door_status": "maintenance", "code_state": "failed", "issue_attempts": 3,
                   "last_error": "gateway offline", "paid_at": at, "deadline_seconds": 900,
                   "actor": {"kind": "system"}, "at": at}),
        ),
        (
            "Door",
            json!({"type": "AccessCodeReissueRequested",
                   "payment_id": "a10a5ff6-db0d-44f4-b9cb-edd37d8f1b54", "mode": "replace",
                   "previous_passcode_id": 90412201, "previous_deleted": true,
                   "actor": {"kind": "operator", "id": "alice"}, "at": at}),
        ),
        (
            "Door",
            json!({"type": "StrayPasscodesRemoved",
                   "payment_id": "a10a5ff6-db0d-44f4-b9cb-edd37d8f1b54", "count": 1,
                   "actor": {"kind": "system"}, "at": at}),
        ),
        (
            "Door",
            json!({"type": "DoorOfflineFallbackChanged", "enabled": true,
                   "actor": {"kind": "operator", "id": "alice"}, "at": at}),
        ),
        (
            "Device",
            json!({"type": "QueuedSessionWithdrawn", "session_id": session_id, "at": at}),
        ),
        (
            "DeviceSession",
            json!({"type": "RelayStateObserved", "is_on": false, "at": at}),
        ),
        (
            "DeviceSession",
            json!({"type": "SessionCancelled", "reason": "the grace period ended", "at": at}),
        ),
    ]
}

/// Every variant name of an internally tagged event enum, read from serde's error for
/// an unknown tag.
fn variants<E: DeserializeOwned>() -> Vec<String> {
    let probe = json!({"type": "\u{1}no such variant"});
    let Err(error) = serde_json::from_value::<E>(probe) else {
        panic!("the probe variant deserialized");
    };
    let message = error.to_string();
    let expected = message
        .split_once("expected")
        .map(|(_, rest)| rest)
        .unwrap_or_default();
    expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// Reads `golden` (of `event_type` at `version`) with today's code and checks that
/// nothing it says is lost.
pub(crate) fn check_golden<E: Serialize + DeserializeOwned>(
    aggregate_type: &str,
    event_type: &str,
    version: &str,
    golden: &Value,
) -> Result<(), String> {
    let current = upcast::to_current(aggregate_type, event_type, version, golden.clone())?;
    let event: E = serde_json::from_value(current.clone()).map_err(|error| {
        format!(
            "today's code cannot read {aggregate_type} {event_type} v{version}: {error}. A \
             changed event shape needs a new event version and an upcaster"
        )
    })?;
    let written = serde_json::to_value(&event).map_err(|error| error.to_string())?;
    contained(&current, &written, "").map_err(|difference| {
        format!(
            "{aggregate_type} {event_type} v{version} reads back differently ({difference}): \
             a field was renamed, removed or changed without a new version and an upcaster"
        )
    })
}

/// Every field of `golden` is in `written` with the same value (more fields are fine).
fn contained(golden: &Value, written: &Value, path: &str) -> Result<(), String> {
    match (golden, written) {
        (Value::Object(golden), Value::Object(written)) => {
            for (key, value) in golden {
                let inner = format!("{path}/{key}");
                let Some(other) = written.get(key) else {
                    return Err(format!("{inner} is gone"));
                };
                contained(value, other, &inner)?;
            }
            Ok(())
        }
        (Value::Array(golden), Value::Array(written)) if golden.len() == written.len() => golden
            .iter()
            .zip(written)
            .enumerate()
            .try_for_each(|(index, (g, w))| contained(g, w, &format!("{path}/{index}"))),
        _ if golden == written => Ok(()),
        _ => Err(format!("{path} was {golden}, now {written}")),
    }
}

/// Checks one aggregate's golden files and its variants' coverage; returns problems.
fn check_aggregate<E: Serialize + DeserializeOwned>(aggregate_type: &str) -> Vec<String> {
    let directory = fixtures().join(aggregate_type);
    let bless = std::env::var("BLESS_EVENTS").is_ok_and(|value| value == "1");
    let mut problems = Vec::new();
    for variant in variants::<E>() {
        let version = upcast::current_version(aggregate_type, &variant);
        let file = directory.join(format!("{variant}.v{version}.json"));
        if file.exists() {
            continue;
        }
        let sample = samples().into_iter().find(|(kind, payload)| {
            *kind == aggregate_type && payload["type"] == Value::String(variant.clone())
        });
        match (bless, sample) {
            (true, Some((_, payload))) => {
                std::fs::create_dir_all(&directory).unwrap();
                let text = serde_json::to_string_pretty(&payload).unwrap() + "\n";
                std::fs::write(&file, text).unwrap();
                eprintln!("wrote {}", file.display());
            }
            _ => problems.push(format!(
                "{aggregate_type} event {variant} v{version} has no golden file {}. Add a \
                 sample of it to `samples()` in aggregates/src/golden.rs, then run \
                 `BLESS_EVENTS=1 cargo test -p latchkey-aggregates golden` (it writes only \
                 missing files) and commit the file",
                file.display()
            )),
        }
    }
    let Ok(entries) = std::fs::read_dir(&directory) else {
        return problems;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let Some((event_type, version)) = name
            .strip_suffix(".json")
            .and_then(|stem| stem.rsplit_once(".v"))
        else {
            continue;
        };
        let text = std::fs::read_to_string(entry.path()).unwrap();
        let golden: Value = match serde_json::from_str(&text) {
            Ok(golden) => golden,
            Err(error) => {
                problems.push(format!("{name} is not JSON: {error}"));
                continue;
            }
        };
        if let Err(problem) = check_golden::<E>(aggregate_type, event_type, version, &golden) {
            problems.push(problem);
        }
    }
    problems
}

#[test]
fn golden_events_of_every_type_and_version_are_read_by_todays_code() {
    let mut problems = check_aggregate::<PaymentEvent>("Payment");
    problems.extend(check_aggregate::<DoorEvent>("Door"));
    problems.extend(check_aggregate::<DeviceEvent>("Device"));
    problems.extend(check_aggregate::<SessionEvent>("DeviceSession"));
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn variants_are_listed_from_serde() {
    let payment = variants::<PaymentEvent>();
    assert!(
        payment.contains(&"CheckoutStarted".to_string()),
        "{payment:?}"
    );
    assert!(payment.len() >= 14, "{payment:?}");
}

/// The checker itself: a renamed field without a new version and an upcaster is caught,
/// with or without `#[serde(default)]`; a new defaulted field is not.
#[test]
fn the_checker_catches_a_renamed_field_and_accepts_a_defaulted_new_one() {
    use serde::Deserialize;
    #[derive(Serialize, Deserialize)]
    #[serde(tag = "type")]
    enum Renamed {
        Paid { amount_minor: i64 },
    }
    #[derive(Serialize, Deserialize)]
    #[serde(tag = "type")]
    enum RenamedWithDefault {
        Paid {
            #[serde(default)]
            amount_minor: i64,
        },
    }
    #[derive(Serialize, Deserialize)]
    #[serde(tag = "type")]
    enum Grown {
        Paid {
            amount: i64,
            #[serde(default)]
            note: Option<String>,
        },
    }
    let golden = json!({"type": "Paid", "amount": 5});
    let renamed = check_golden::<Renamed>("Test", "Paid", "1", &golden).unwrap_err();
    assert!(
        renamed.contains("new event version and an upcaster"),
        "{renamed}"
    );
    let defaulted = check_golden::<RenamedWithDefault>("Test", "Paid", "1", &golden).unwrap_err();
    assert!(defaulted.contains("/amount is gone"), "{defaulted}");
    check_golden::<Grown>("Test", "Paid", "1", &golden).unwrap();
    // A version nobody wrote an upcaster for is refused by name.
    let old = check_golden::<Grown>("Test", "Paid", "0", &golden).unwrap_err();
    assert!(old.contains("no upcaster from version 0"), "{old}");
}
