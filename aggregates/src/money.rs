//! Money as Stripe counts it: an integer amount in the currency's smallest unit plus a
//! lower-case ISO 4217 code.
//!
//! There is no floating point anywhere in the ledger. A zero-decimal currency such as
//! `jpy` simply has `amount_minor` equal to whole yen, exactly as Stripe reports it.
//!
//! How many minor units make one major unit differs per currency, and Stripe has its own
//! rules on top of ISO 4217. [`Currency::minor_units`] is the one table of them: every form
//! that reads "1.250" and every page, CSV or report that writes an amount goes through
//! [`Currency::parse_major`] and [`Currency::format_major`], never through a local `* 100`.

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

/// How Stripe counts one currency: digits after the decimal point in its `amount`, and the
/// smallest step a charge may move by (in minor units).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinorUnits {
    /// 0 for `jpy` (500 is ¥500), 2 for `eur` (250 is €2.50), 3 for `kwd` (1250 is 1.250 KWD).
    pub decimals: u32,
    /// Every amount Stripe accepts is a multiple of this: 10 for the three-decimal
    /// currencies (Stripe's partners need the last digit 0), 100 for `isk` (whole krónur,
    /// written with two decimals), 1 otherwise.
    pub step_minor: i64,
}

impl MinorUnits {
    /// Minor units in one major unit: 1, 100 or 1000.
    pub fn per_major(self) -> i64 {
        10_i64.pow(self.decimals)
    }
}

/// Stripe's zero-decimal currencies: `amount` is whole units.
const ZERO_DECIMAL: [&str; 16] = [
    "bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv",
    "xaf", "xof", "xpf",
];

/// Stripe's three-decimal currencies; amounts must end in 0 (5.124 KWD is refused, 5.120
/// is not).
const THREE_DECIMAL: [&str; 5] = ["bhd", "jod", "kwd", "omr", "tnd"];

/// Stripe's special cases that change what an amount may be. `isk` stays two-decimal in
/// the API but only whole krónur can be charged or refunded (multiples of 100). `huf` and
/// `twd` are two-decimal for charges and zero-decimal only for payouts, which we never
/// make, so they follow the default rule.
const WHOLE_UNITS_ONLY: [&str; 1] = ["isk"];

/// Why a typed amount is not an amount of its currency. The message is for the person who
/// typed it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MajorAmountError {
    #[error("{text:?} is not an amount of {code}; write a positive number such as {example}")]
    NotANumber {
        text: String,
        code: String,
        example: String,
    },
    #[error("{code} has no fraction: write whole {code} such as {example}, not {text:?}")]
    NoFraction {
        text: String,
        code: String,
        example: String,
    },
    #[error("{code} has {decimals} decimals at most; {text:?} has more (e.g. {example})")]
    TooManyDecimals {
        text: String,
        code: String,
        decimals: u32,
        example: String,
    },
    #[error("{text:?} {code} cannot be charged: Stripe takes {code} in steps of {step} (e.g. {example})")]
    OffStep {
        text: String,
        code: String,
        step: String,
        example: String,
    },
    #[error("the amount must be more than zero, not {text:?}")]
    NotPositive { text: String },
    #[error("{text:?} is too large an amount")]
    TooLarge { text: String },
}

impl Currency {
    /// The currency's row in the exponent table (two decimals, step 1 unless listed).
    pub fn minor_units(&self) -> MinorUnits {
        let code = self.as_str();
        if ZERO_DECIMAL.contains(&code) {
            MinorUnits {
                decimals: 0,
                step_minor: 1,
            }
        } else if THREE_DECIMAL.contains(&code) {
            MinorUnits {
                decimals: 3,
                step_minor: 10,
            }
        } else if WHOLE_UNITS_ONLY.contains(&code) {
            MinorUnits {
                decimals: 2,
                step_minor: 100,
            }
        } else {
            MinorUnits {
                decimals: 2,
                step_minor: 1,
            }
        }
    }

    /// Upper-case code as people write it: `KWD`.
    pub fn code(&self) -> String {
        self.0.to_ascii_uppercase()
    }

    /// An amount as an operator types it, in major units of this currency's own precision,
    /// to minor units: `"500"` JPY → 500, `"1.250"` KWD → 1250, `"2.5"` EUR → 250. Refuses
    /// zero, signs, more decimals than the currency has, and amounts Stripe would refuse
    /// (`"1.255"` KWD, `"5.50"` ISK).
    pub fn parse_major(&self, text: &str) -> Result<i64, MajorAmountError> {
        let units = self.minor_units();
        let trimmed = text.trim();
        let (whole, fraction) = trimmed.split_once('.').unwrap_or((trimmed, ""));
        let digits = |part: &str| part.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty() && fraction.is_empty() || !digits(whole) || !digits(fraction) {
            return Err(MajorAmountError::NotANumber {
                text: text.to_owned(),
                code: self.code(),
                example: self.example(),
            });
        }
        if trimmed.contains('.') && units.decimals == 0 {
            return Err(MajorAmountError::NoFraction {
                text: text.to_owned(),
                code: self.code(),
                example: self.example(),
            });
        }
        if fraction.len() > units.decimals as usize {
            return Err(MajorAmountError::TooManyDecimals {
                text: text.to_owned(),
                code: self.code(),
                decimals: units.decimals,
                example: self.example(),
            });
        }
        let too_large = || MajorAmountError::TooLarge {
            text: text.to_owned(),
        };
        let whole: i64 = match whole {
            "" => 0,
            whole => whole.parse().map_err(|_| too_large())?,
        };
        // "1.25" in a three-decimal currency is 1.250: pad the fraction to full precision.
        let padding = units.decimals as usize - fraction.len();
        let fraction: i64 = match fraction {
            "" => 0,
            fraction => {
                fraction.parse::<i64>().map_err(|_| too_large())? * 10_i64.pow(padding as u32)
            }
        };
        let minor = whole
            .checked_mul(units.per_major())
            .and_then(|minor| minor.checked_add(fraction))
            .ok_or_else(too_large)?;
        if minor <= 0 {
            return Err(MajorAmountError::NotPositive {
                text: text.to_owned(),
            });
        }
        if minor % units.step_minor != 0 {
            return Err(MajorAmountError::OffStep {
                text: text.to_owned(),
                code: self.code(),
                step: self.format_major(units.step_minor),
                example: self.example(),
            });
        }
        Ok(minor)
    }

    /// Minor units as major units in the currency's own precision, without symbol or code:
    /// 500 JPY → `500`, 1250 KWD → `1.250`, 250 EUR → `2.50`, 50000 ISK → `500`. What the
    /// forms prefill and [`Currency::parse_major`] reads back to the same amount.
    pub fn format_major(&self, amount_minor: i64) -> String {
        let units = self.minor_units();
        let sign = if amount_minor < 0 { "-" } else { "" };
        let minor = amount_minor.unsigned_abs();
        let per_major = units.per_major().unsigned_abs();
        let (whole, fraction) = (minor / per_major, minor % per_major);
        // Whole-units-only currencies (ISK) show no fraction unless an old amount has one.
        let whole_only = units.step_minor == units.per_major() && fraction == 0;
        if units.decimals == 0 || whole_only {
            return format!("{sign}{whole}");
        }
        let width = units.decimals as usize;
        format!("{sign}{whole}.{fraction:0width$}")
    }

    /// A typical amount of this currency, for messages: `500`, `2.50`, `1.250`.
    fn example(&self) -> String {
        let units = self.minor_units();
        let example_minor = match units.decimals {
            0 => 500,
            _ => units.per_major() * 5 / 2 / units.step_minor * units.step_minor,
        };
        self.format_major(example_minor)
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

    /// The amount in major units and the upper-case code: `1.250 KWD`, `500 JPY`.
    pub fn major_with_code(&self) -> String {
        format!(
            "{} {}",
            self.currency.format_major(self.amount_minor),
            self.currency.code()
        )
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

    fn currency(code: &str) -> Currency {
        Currency::parse(code).unwrap()
    }

    #[test]
    fn the_exponent_table_follows_stripe() {
        for code in ["jpy", "krw", "vnd", "clp", "ugx", "xof"] {
            assert_eq!(currency(code).minor_units().decimals, 0, "{code}");
        }
        for code in ["bhd", "jod", "kwd", "omr", "tnd"] {
            let units = currency(code).minor_units();
            assert_eq!((units.decimals, units.step_minor), (3, 10), "{code}");
        }
        let isk = currency("isk").minor_units();
        assert_eq!((isk.decimals, isk.step_minor), (2, 100));
        for code in ["eur", "usd", "gbp", "huf", "twd", "sek"] {
            let units = currency(code).minor_units();
            assert_eq!((units.decimals, units.step_minor), (2, 1), "{code}");
        }
    }

    #[test]
    fn major_units_are_read_in_the_currency_s_own_precision() {
        assert_eq!(currency("jpy").parse_major("500"), Ok(500));
        assert_eq!(currency("kwd").parse_major("1.250"), Ok(1250));
        assert_eq!(currency("kwd").parse_major("1.25"), Ok(1250));
        assert_eq!(currency("kwd").parse_major("2"), Ok(2000));
        assert_eq!(currency("eur").parse_major("2.5"), Ok(250));
        assert_eq!(currency("eur").parse_major(" 12.05 "), Ok(1205));
        assert_eq!(currency("eur").parse_major(".5"), Ok(50));
        assert_eq!(currency("isk").parse_major("500"), Ok(50000));
        assert_eq!(currency("huf").parse_major("10.45"), Ok(1045));
    }

    #[test]
    fn amounts_outside_the_currency_s_precision_are_refused_with_a_reason() {
        let kwd = currency("kwd").parse_major("1.2505").unwrap_err();
        assert!(matches!(
            kwd,
            MajorAmountError::TooManyDecimals { decimals: 3, .. }
        ));
        assert_eq!(
            kwd.to_string(),
            "KWD has 3 decimals at most; \"1.2505\" has more (e.g. 2.500)"
        );
        let off_step = currency("kwd").parse_major("1.255").unwrap_err();
        assert!(
            off_step.to_string().contains("steps of 0.010"),
            "{off_step}"
        );
        assert!(matches!(
            currency("jpy").parse_major("500.5"),
            Err(MajorAmountError::NoFraction { .. })
        ));
        assert!(matches!(
            currency("isk").parse_major("5.50"),
            Err(MajorAmountError::OffStep { .. })
        ));
        assert!(matches!(
            currency("eur").parse_major("1.234"),
            Err(MajorAmountError::TooManyDecimals { .. })
        ));
        for bad in ["", ".", "abc", "1,50", "-1", "+1", "1.2.3", "1e3"] {
            assert!(
                matches!(
                    currency("eur").parse_major(bad),
                    Err(MajorAmountError::NotANumber { .. })
                ),
                "{bad:?}"
            );
        }
        for zero in ["0", "0.00"] {
            assert!(matches!(
                currency("eur").parse_major(zero),
                Err(MajorAmountError::NotPositive { .. })
            ));
        }
        assert!(matches!(
            currency("eur").parse_major("99999999999999999999"),
            Err(MajorAmountError::TooLarge { .. })
        ));
    }

    #[test]
    fn minor_units_are_written_in_the_currency_s_own_precision_and_read_back() {
        let cases = [
            ("jpy", 500, "500"),
            ("kwd", 1250, "1.250"),
            ("kwd", 5, "0.005"),
            ("eur", 250, "2.50"),
            ("eur", -5, "-0.05"),
            ("isk", 50000, "500"),
            ("isk", 4010, "40.10"),
            ("usd", 0, "0.00"),
        ];
        for (code, minor, text) in cases {
            assert_eq!(currency(code).format_major(minor), text, "{code} {minor}");
        }
        for (code, minor) in [("jpy", 500), ("kwd", 1250), ("eur", 250), ("isk", 50000)] {
            let currency = currency(code);
            assert_eq!(
                currency.parse_major(&currency.format_major(minor)),
                Ok(minor)
            );
        }
        assert_eq!(
            Money::new(1250, currency("kwd")).major_with_code(),
            "1.250 KWD"
        );
    }
}
