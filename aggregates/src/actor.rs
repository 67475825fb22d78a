//! Who asked for a command, so that the audit log can say so.
//!
//! Every command carries an [`Actor`]. Events that record a human decision (force end,
//! maintenance, price or plan change, refund request, relay switched by hand) copy it into
//! the event; for everything else the application puts it in the event metadata.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Actor {
    /// A guest acting through the public pages (checkout).
    Guest,
    /// A Stripe webhook or the Stripe catch-up job.
    Stripe,
    /// Latchkey itself: workflows, the reconciler, housekeeping.
    System,
    /// A logged-in operator or an API token, named by its account id.
    Operator { id: String },
}

impl Actor {
    pub fn operator(id: impl Into<String>) -> Self {
        Self::Operator { id: id.into() }
    }
}

impl fmt::Display for Actor {
    /// The audit log's spelling: `guest`, `stripe`, `system` or `operator:<id>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Guest => f.write_str("guest"),
            Self::Stripe => f.write_str("stripe"),
            Self::System => f.write_str("system"),
            Self::Operator { id } => write!(f, "operator:{id}"),
        }
    }
}

/// Why a text is not an actor.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an actor; expected guest, stripe, system or operator:<id>")]
pub struct InvalidActor(pub String);

impl FromStr for Actor {
    type Err = InvalidActor;

    /// Parses the [`Display`](fmt::Display) form back, so metadata can be read again.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "guest" => Ok(Self::Guest),
            "stripe" => Ok(Self::Stripe),
            "system" => Ok(Self::System),
            _ => match text.strip_prefix("operator:") {
                Some(id) if !id.is_empty() => Ok(Self::operator(id)),
                _ => Err(InvalidActor(text.to_owned())),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actor_displays_and_parses_back_for_the_audit_log() {
        for actor in [
            Actor::Guest,
            Actor::Stripe,
            Actor::System,
            Actor::operator("alice"),
        ] {
            assert_eq!(actor.to_string().parse::<Actor>(), Ok(actor));
        }
        assert_eq!(Actor::operator("alice").to_string(), "operator:alice");
        assert!("operator:".parse::<Actor>().is_err());
        assert!("robot".parse::<Actor>().is_err());
    }

    #[test]
    fn actor_is_serde_tagged_by_kind() {
        let json = serde_json::to_string(&Actor::operator("alice")).unwrap();
        assert_eq!(json, r#"{"kind":"operator","id":"alice"}"#);
        let json = serde_json::to_string(&Actor::Stripe).unwrap();
        assert_eq!(json, r#"{"kind":"stripe"}"#);
    }
}
