//! Tamper evidence: every event carries `hash` and `prev_hash` in its metadata.
//!
//! `hash = SHA-256(prev_hash ‖ event_type ‖ event_version ‖ aggregate_type ‖ aggregate_id
//! ‖ sequence ‖ canonical(payload))`, each field length-prefixed so that no two different
//! events can produce the same input. The first event of an aggregate chains to
//! [`GENESIS`]. Changing any stored byte of an event breaks its own hash; deleting or
//! reordering events breaks the next event's `prev_hash`.
//!
//! The payload is hashed in a canonical form (object keys sorted, no white space) so that
//! the hash depends on the event's content, not on how a database chose to store it.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// The `prev_hash` of every aggregate's first event.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Metadata key holding an event's own hash.
pub const HASH_KEY: &str = "hash";
/// Metadata key holding the hash of the aggregate's previous event.
pub const PREV_HASH_KEY: &str = "prev_hash";

/// The stored fields of an event that its hash covers.
#[derive(Clone, Copy, Debug)]
pub struct ChainedFields<'a> {
    pub aggregate_type: &'a str,
    pub aggregate_id: &'a str,
    pub sequence: i64,
    pub event_type: &'a str,
    pub event_version: &'a str,
    pub payload: &'a Value,
}

/// Hex SHA-256 of an event chained to `prev_hash`.
pub fn event_hash(prev_hash: &str, fields: &ChainedFields<'_>) -> String {
    let mut hasher = Sha256::new();
    let mut field = |bytes: &[u8]| {
        hasher.update((bytes.len() as u64).to_be_bytes());
        hasher.update(bytes);
    };
    field(prev_hash.as_bytes());
    field(fields.event_type.as_bytes());
    field(fields.event_version.as_bytes());
    field(fields.aggregate_type.as_bytes());
    field(fields.aggregate_id.as_bytes());
    field(&fields.sequence.to_be_bytes());
    field(canonical_json(fields.payload).as_bytes());
    hex::encode(hasher.finalize())
}

/// JSON text with object keys sorted at every level and no insignificant white space.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (index, (key, item)) in entries.into_iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                // The same escaping as a `Value::String`, without cloning the key.
                out.push_str(&serde_json::to_string(key.as_str()).unwrap_or_default());
                out.push(':');
                write_canonical(item, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// Reads a hash stored in an event's metadata.
pub fn stored_hash<'a>(metadata: &'a Value, key: &str) -> Option<&'a str> {
    metadata.get(key).and_then(Value::as_str)
}

/// The first place where a chain does not hold.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct BrokenLink {
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    /// The journal position of the event, when known.
    pub position: Option<i64>,
    pub reason: String,
}

impl std::fmt::Display for BrokenLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(position) = self.position {
            write!(f, "position {position}, ")?;
        }
        write!(
            f,
            "{} {} sequence {}: {}",
            self.aggregate_type, self.aggregate_id, self.sequence, self.reason
        )
    }
}

/// Walks events sorted by (aggregate type, aggregate id, sequence) and checks each link.
#[derive(Debug, Default)]
pub struct ChainVerifier {
    current: Option<(String, String)>,
    expected_sequence: i64,
    expected_prev_hash: String,
    pub events_checked: u64,
    pub aggregates_checked: u64,
}

impl ChainVerifier {
    /// Checks the next event; returns the broken link if this event breaks its chain.
    pub fn check(&mut self, fields: &ChainedFields<'_>, metadata: &Value) -> Option<BrokenLink> {
        let same_aggregate = self
            .current
            .as_ref()
            .is_some_and(|(kind, id)| kind == fields.aggregate_type && id == fields.aggregate_id);
        if !same_aggregate {
            self.current = Some((
                fields.aggregate_type.to_string(),
                fields.aggregate_id.to_string(),
            ));
            self.expected_sequence = 1;
            self.expected_prev_hash = GENESIS.to_string();
            self.aggregates_checked += 1;
        }
        self.events_checked += 1;
        let broken = |reason: String| {
            Some(BrokenLink {
                aggregate_type: fields.aggregate_type.to_string(),
                aggregate_id: fields.aggregate_id.to_string(),
                sequence: fields.sequence,
                position: None,
                reason,
            })
        };
        if fields.sequence != self.expected_sequence {
            return broken(format!(
                "expected sequence {} (an event is missing or out of place)",
                self.expected_sequence
            ));
        }
        let Some(prev_hash) = stored_hash(metadata, PREV_HASH_KEY) else {
            return broken("no prev_hash in metadata".to_string());
        };
        if prev_hash != self.expected_prev_hash {
            return broken("prev_hash does not match the previous event's hash".to_string());
        }
        let Some(hash) = stored_hash(metadata, HASH_KEY) else {
            return broken("no hash in metadata".to_string());
        };
        let recomputed = event_hash(prev_hash, fields);
        if hash != recomputed {
            return broken("stored hash does not match the event's content".to_string());
        }
        self.expected_sequence += 1;
        self.expected_prev_hash = recomputed;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields<'a>(sequence: i64, payload: &'a Value) -> ChainedFields<'a> {
        ChainedFields {
            aggregate_type: "Payment",
            aggregate_id: "p-1",
            sequence,
            event_type: "PaymentStarted",
            event_version: "1",
            payload,
        }
    }

    fn metadata(prev: &str, hash: &str) -> Value {
        json!({ PREV_HASH_KEY: prev, HASH_KEY: hash })
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let value = json!({"b": 1, "a": {"d": [1, {"z": true, "y": null}], "c": "x"}});
        assert_eq!(
            canonical_json(&value),
            r#"{"a":{"c":"x","d":[1,{"y":null,"z":true}]},"b":1}"#
        );
    }

    #[test]
    fn the_hash_changes_with_every_covered_field() {
        let payload = json!({"amount": 500});
        let base = event_hash(GENESIS, &fields(1, &payload));
        let other_payload = json!({"amount": 501});
        assert_ne!(base, event_hash(GENESIS, &fields(1, &other_payload)));
        assert_ne!(base, event_hash(GENESIS, &fields(2, &payload)));
        assert_ne!(base, event_hash(&base, &fields(1, &payload)));
        let mut renamed = fields(1, &payload);
        renamed.event_type = "PaymentFailed";
        assert_ne!(base, event_hash(GENESIS, &renamed));
    }

    #[test]
    fn a_valid_chain_verifies_and_a_tampered_payload_is_named() {
        let first = json!({"n": 1});
        let second = json!({"n": 2});
        let h1 = event_hash(GENESIS, &fields(1, &first));
        let h2 = event_hash(&h1, &fields(2, &second));
        let mut verifier = ChainVerifier::default();
        assert_eq!(
            verifier.check(&fields(1, &first), &metadata(GENESIS, &h1)),
            None
        );
        assert_eq!(
            verifier.check(&fields(2, &second), &metadata(&h1, &h2)),
            None
        );

        let tampered = json!({"n": 3});
        let mut verifier = ChainVerifier::default();
        assert_eq!(
            verifier.check(&fields(1, &first), &metadata(GENESIS, &h1)),
            None
        );
        let broken = verifier
            .check(&fields(2, &tampered), &metadata(&h1, &h2))
            .unwrap();
        assert_eq!(broken.sequence, 2);
        assert_eq!(broken.aggregate_id, "p-1");
    }

    #[test]
    fn a_missing_event_is_named() {
        let first = json!({"n": 1});
        let h1 = event_hash(GENESIS, &fields(1, &first));
        let third = json!({"n": 3});
        let mut verifier = ChainVerifier::default();
        verifier.check(&fields(1, &first), &metadata(GENESIS, &h1));
        let broken = verifier
            .check(&fields(3, &third), &metadata(&h1, "x"))
            .unwrap();
        assert!(broken.reason.contains("expected sequence 2"));
    }
}
