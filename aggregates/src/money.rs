//! Money as Stripe counts it: an integer amount in the currency's smallest unit plus a
//! lower-case ISO 4217 code.
//!
//! There is no floating point anywhere in the ledger. A zero-decimal currency such as
//! `jpy` simply has `amount_minor` equal to whole yen, exactly as Stripe reports it.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A validated ISO 4217 currency code in lower case, such as `"eur"`.
///
/// Stored lower case because Stripe sends and expects it that way; comparing two
/// `Currency` values is therefore a plain string comparison.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency(String);

/// Why a text is not a currency code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a currency code; expected three lower-case letters such as \"eur\"")]
pub struct InvalidCurrency(pub String);

impl Currency {
    /// Parses a three-letter code. Upper case is refused rather than folded, so that a
    /// value that reached the domain unnormalised is noticed at the edge that sent it.
    pub fn parse(code: &str) -> Result<Self, InvalidCurrency> {
        let valid = code.len() == 3 && code.bytes().all(|b| b.is_ascii_lowercase());
        if !valid {
            return Err(InvalidCurrency(code.to_owned()));
        }
        Ok(Self(code.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Currency {
    type Error = InvalidCurrency;

    fn try_from(code: String) -> Result<Self, Self::Error> {
        Self::parse(&code)
    }
}

impl From<Currency> for String {
    fn from(currency: Currency) -> Self {
        currency.0
    }
}

impl std::str::FromStr for Currency {
    type Err = InvalidCurrency;

    fn from_str(code: &str) -> Result<Self, Self::Err> {
        Self::parse(code)
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An amount of money: integer minor units (cents) and the currency they are in.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Money {
    pub amount_minor: i64,
    pub currency: Currency,
}

impl Money {
    pub fn new(amount_minor: i64, currency: Currency) -> Self {
        Self {
            amount_minor,
            currency,
        }
    }

    /// Zero in the given currency; the starting point of cumulative totals.
    pub fn zero(currency: Currency) -> Self {
        Self::new(0, currency)
    }

    /// The same currency with another amount; used when an event restates a total.
    pub fn with_amount(&self, amount_minor: i64) -> Self {
        Self::new(amount_minor, self.currency.clone())
    }

    pub fn is_positive(&self) -> bool {
        self.amount_minor > 0
    }
}

impl fmt::Display for Money {
    /// Minor units and code, e.g. `1250 eur`: unambiguous for every currency, unlike a
    /// decimal rendering that would need each currency's exponent.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.amount_minor, self.currency)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn currency_accepts_three_lower_case_letters_only() {
        assert!(Currency::parse("eur").is_ok());
        assert_eq!(
            Currency::parse("EUR"),
            Err(InvalidCurrency("EUR".to_owned()))
        );
        assert!(Currency::parse("eu").is_err());
        assert!(Currency::parse("euro").is_err());
        assert!(Currency::parse("e1r").is_err());
    }

    #[test]
    fn money_serializes_as_minor_units_and_refuses_an_invalid_currency_on_the_way_in() {
        let money = Money::new(1250, Currency::parse("eur").unwrap());
        let json = serde_json::to_string(&money).unwrap();
        assert_eq!(json, r#"{"amount_minor":1250,"currency":"eur"}"#);
        assert_eq!(serde_json::from_str::<Money>(&json).unwrap(), money);
        assert!(serde_json::from_str::<Money>(r#"{"amount_minor":1,"currency":"EUR"}"#).is_err());
        assert_eq!(money.to_string(), "1250 eur");
    }
}
