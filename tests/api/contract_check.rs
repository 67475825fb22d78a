//! The conformance run's two halves that know nothing about Latchkey: a JSON-schema checker
//! for the subset of OpenAPI 3.1 schemas the served document uses, and a seeded generator
//! that makes values valid by a schema and values that break it in one place. No network
//! and no extra dependencies: the run must be repeatable (same seed, same requests) and
//! say in words where a body and its schema disagree.

use serde_json::{json, Map, Value};

/// A small, seeded generator (SplitMix64): the same seed gives the same requests.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next_u64() % 100 < percent
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// An integer in `low..=high`, often one of the ends.
    pub fn int_in(&mut self, low: i64, high: i64) -> i64 {
        match self.below(6) {
            0 => low,
            1 => high,
            _ => {
                let span = (high as i128 - low as i128 + 1) as u128;
                (low as i128 + (self.next_u64() as u128 % span) as i128) as i64
            }
        }
    }
}

/// Time zones the generator draws from (the checker asks the server's own parser).
const TIME_ZONES: &[&str] = &[
    "Europe/Paris",
    "Europe/Berlin",
    "America/New_York",
    "Asia/Tokyo",
    "UTC",
    "Australia/Sydney",
];

/// The patterns the document uses, each with a check and a way to make a matching string.
/// The checker refuses any other pattern, so a new one in the document is noticed here.
pub const NOT_BLANK: &str = "\\S";
pub const DIGITS: &str = "^[0-9]+$";
pub const LOWER3: &str = "^[a-z]{3}$";
pub const VISIBLE: &str = "^[!-~]+$";

fn pattern_matches(pattern: &str, text: &str) -> Option<bool> {
    match pattern {
        NOT_BLANK => Some(text.chars().any(|c| !c.is_whitespace())),
        DIGITS => Some(!text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())),
        LOWER3 => Some(text.len() == 3 && text.bytes().all(|b| b.is_ascii_lowercase())),
        VISIBLE => Some(!text.is_empty() && text.bytes().all(|b| (b'!'..=b'~').contains(&b))),
        _ => None,
    }
}

/// Follows `$ref: #/components/schemas/Name` (repeatedly).
pub fn resolve<'a>(document: &'a Value, schema: &'a Value) -> &'a Value {
    let mut current = schema;
    for _ in 0..16 {
        match current.get("$ref").and_then(Value::as_str) {
            Some(reference) => {
                let name = reference
                    .strip_prefix("#/components/schemas/")
                    .unwrap_or_else(|| panic!("unsupported $ref {reference}"));
                current = &document["components"]["schemas"][name];
                assert!(!current.is_null(), "dangling $ref {reference}");
            }
            None => return current,
        }
    }
    panic!("a $ref cycle")
}

fn types_of(schema: &Value) -> Vec<String> {
    match schema.get("type") {
        Some(Value::String(one)) => vec![one.clone()],
        Some(Value::Array(many)) => many
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    }
}

fn has_type(value: &Value, kind: &str) -> bool {
    match kind {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "string" => value.is_string(),
        "array" => value.is_array(),
        "object" => value.is_object(),
        "number" => value.is_number(),
        "integer" => {
            value.is_i64()
                || value.is_u64()
                || value
                    .as_f64()
                    .is_some_and(|f| f.fract() == 0.0 && f.is_finite())
        }
        _ => false,
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Every way `value` breaks `schema`, each naming the JSON path (`$.plans[0].minutes`).
pub fn check(document: &Value, schema: &Value, value: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    check_at(document, schema, value, "$", &mut errors);
    errors
}

fn check_at(document: &Value, schema: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
    let schema = resolve(document, schema);
    if schema == &Value::Bool(true) || schema.as_object().is_some_and(Map::is_empty) {
        return;
    }
    if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
        for part in all {
            check_at(document, part, value, at, errors);
        }
    }
    for (keyword, exactly_one) in [("oneOf", true), ("anyOf", false)] {
        if let Some(branches) = schema.get(keyword).and_then(Value::as_array) {
            let mut branch_errors = Vec::new();
            let passing = branches
                .iter()
                .filter(|branch| {
                    let found = check(document, branch, value);
                    let ok = found.is_empty();
                    branch_errors.extend(found);
                    ok
                })
                .count();
            let fine = if exactly_one {
                passing == 1
            } else {
                passing >= 1
            };
            if !fine {
                errors.push(format!(
                    "{at}: {passing} of the {keyword} branches match (errors: {})",
                    branch_errors.join("; ")
                ));
            }
        }
    }
    let types = types_of(schema);
    if !types.is_empty() && !types.iter().any(|kind| has_type(value, kind)) {
        errors.push(format!(
            "{at}: {} is not of type {}",
            type_name(value),
            types.join("|")
        ));
        return;
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
        if !allowed.contains(value) {
            errors.push(format!(
                "{at}: {value} is not one of {}",
                Value::from(allowed.clone())
            ));
        }
    }
    match value {
        Value::String(text) => check_string(schema, text, at, errors),
        Value::Number(_) => check_number(schema, value, at, errors),
        Value::Array(items) => {
            let count = items.len() as u64;
            if let Some(min) = schema.get("minItems").and_then(Value::as_u64) {
                if count < min {
                    errors.push(format!("{at}: {count} items, fewer than {min}"));
                }
            }
            if let Some(max) = schema.get("maxItems").and_then(Value::as_u64) {
                if count > max {
                    errors.push(format!("{at}: {count} items, more than {max}"));
                }
            }
            if let Some(item_schema) = schema.get("items") {
                for (index, item) in items.iter().enumerate() {
                    check_at(
                        document,
                        item_schema,
                        item,
                        &format!("{at}[{index}]"),
                        errors,
                    );
                }
            }
        }
        Value::Object(fields) => {
            let properties = schema.get("properties").and_then(Value::as_object);
            if let Some(required) = schema.get("required").and_then(Value::as_array) {
                for name in required.iter().filter_map(Value::as_str) {
                    if !fields.contains_key(name) {
                        errors.push(format!("{at}: the required field {name} is missing"));
                    }
                }
            }
            for (name, field) in fields {
                let path = format!("{at}.{name}");
                match properties.and_then(|p| p.get(name)) {
                    Some(field_schema) => check_at(document, field_schema, field, &path, errors),
                    None => match schema.get("additionalProperties") {
                        Some(Value::Bool(false)) => {
                            errors.push(format!("{path}: a field the schema does not allow"))
                        }
                        Some(extra) if extra.is_object() => {
                            check_at(document, extra, field, &path, errors)
                        }
                        _ => {}
                    },
                }
            }
            if let Some(dependent) = schema.get("dependentSchemas").and_then(Value::as_object) {
                for (name, dependent_schema) in dependent {
                    if fields.contains_key(name) {
                        check_at(document, dependent_schema, value, at, errors);
                    }
                }
            }
        }
        _ => {}
    }
}

fn check_string(schema: &Value, text: &str, at: &str, errors: &mut Vec<String>) {
    let length = text.chars().count() as u64;
    if let Some(min) = schema.get("minLength").and_then(Value::as_u64) {
        if length < min {
            errors.push(format!("{at}: {length} characters, fewer than {min}"));
        }
    }
    if let Some(max) = schema.get("maxLength").and_then(Value::as_u64) {
        if length > max {
            errors.push(format!("{at}: {length} characters, more than {max}"));
        }
    }
    if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
        match pattern_matches(pattern, text) {
            Some(true) => {}
            Some(false) => errors.push(format!("{at}: {text:?} does not match {pattern}")),
            None => errors.push(format!(
                "{at}: the checker does not know the pattern {pattern}"
            )),
        }
    }
    let ok = match schema.get("format").and_then(Value::as_str) {
        Some("uuid") => uuid::Uuid::parse_str(text).is_ok(),
        Some("date-time") => chrono::DateTime::parse_from_rfc3339(text).is_ok(),
        Some("date") => chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").is_ok(),
        Some("time-zone") => latchkey::http::extract::valid_time_zone(text).is_ok(),
        Some("email") => latchkey::payments::checkout::parse_email(text).is_ok(),
        Some("uri") => url::Url::parse(text).is_ok(),
        _ => true,
    };
    if !ok {
        errors.push(format!("{at}: {text:?} is not a {}", schema["format"]));
    }
}

fn check_number(schema: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
    let Some(number) = value.as_f64() else { return };
    if let Some(min) = schema.get("minimum").and_then(Value::as_f64) {
        if number < min {
            errors.push(format!("{at}: {value} is below the minimum {min}"));
        }
    }
    if let Some(max) = schema.get("maximum").and_then(Value::as_f64) {
        if number > max {
            errors.push(format!("{at}: {value} is above the maximum {max}"));
        }
    }
    if let Some(min) = schema.get("exclusiveMinimum").and_then(Value::as_f64) {
        if number <= min {
            errors.push(format!("{at}: {value} is not above {min}"));
        }
    }
    let (low, high) = match schema.get("format").and_then(Value::as_str) {
        Some("int32") => (i32::MIN as f64, i32::MAX as f64),
        Some("uint32") => (0.0, u32::MAX as f64),
        Some("int64") => (i64::MIN as f64, i64::MAX as f64),
        Some("uint64") => (0.0, u64::MAX as f64),
        _ => (f64::MIN, f64::MAX),
    };
    if number < low || number > high {
        errors.push(format!("{at}: {value} does not fit {}", schema["format"]));
    }
}

/// The bounds a generated integer keeps to: the schema's, else its format's, else a
/// modest range (huge values are tried by the invalid cases, through the bounds).
fn integer_bounds(schema: &Value) -> (i64, i64) {
    let (mut low, mut high) = match schema.get("format").and_then(Value::as_str) {
        Some("uint32") | Some("uint64") => (0, 1_000_000),
        _ => (-1_000_000, 1_000_000),
    };
    if let Some(min) = schema.get("minimum").and_then(Value::as_i64) {
        low = min;
        high = high.max(min);
    }
    if let Some(min) = schema.get("exclusiveMinimum").and_then(Value::as_i64) {
        low = min + 1;
        high = high.max(low);
    }
    if let Some(max) = schema.get("maximum").and_then(Value::as_i64) {
        high = max;
        low = low.min(max);
    }
    (low, high)
}

/// Letters and digits only.
fn random_word(rng: &mut Rng, min: usize, max: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let length = min + rng.below(max.saturating_sub(min) + 1);
    (0..length).map(|_| *rng.pick(ALPHABET) as char).collect()
}

fn random_text(rng: &mut Rng, min: usize, max: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 -_.";
    let length = min + rng.below(max.saturating_sub(min) + 1);
    let mut text: String = (0..length).map(|_| *rng.pick(ALPHABET) as char).collect();
    if rng.chance(10) && length > 0 {
        // Something beyond ASCII, counted in characters by both sides.
        text.pop();
        text.push('é');
    }
    text
}

/// A value valid by `schema`.
pub fn valid(document: &Value, schema: &Value, rng: &mut Rng) -> Value {
    let schema = resolve(document, schema);
    if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
        let mut merged = Map::new();
        for part in all {
            if let Value::Object(fields) = valid(document, part, rng) {
                merged.extend(fields);
            }
        }
        return Value::Object(merged);
    }
    for keyword in ["oneOf", "anyOf"] {
        if let Some(branches) = schema.get(keyword).and_then(Value::as_array) {
            let non_null: Vec<&Value> = branches
                .iter()
                .filter(|b| resolve(document, b).get("type") != Some(&json!("null")))
                .collect();
            if non_null.len() < branches.len() && rng.chance(20) {
                return Value::Null;
            }
            let branch: &&Value = rng.pick(&non_null);
            return valid(document, branch, rng);
        }
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
        return rng.pick(allowed).clone();
    }
    let types = types_of(schema);
    let non_null: Vec<&String> = types.iter().filter(|t| t.as_str() != "null").collect();
    if types.iter().any(|t| t == "null") && (non_null.is_empty() || rng.chance(15)) {
        return Value::Null;
    }
    let kind = if non_null.is_empty() {
        "object".to_string()
    } else {
        rng.pick(&non_null).to_string()
    };
    match kind.as_str() {
        "boolean" => Value::Bool(rng.chance(50)),
        "integer" => {
            let (low, high) = integer_bounds(schema);
            json!(rng.int_in(low, high))
        }
        "number" => {
            let (low, high) = integer_bounds(schema);
            json!(rng.int_in(low, high) as f64 + 0.5_f64.min((high - low) as f64))
        }
        "string" => valid_string(schema, rng),
        "array" => {
            let min = schema.get("minItems").and_then(Value::as_u64).unwrap_or(0) as usize;
            let max = schema
                .get("maxItems")
                .and_then(Value::as_u64)
                .map_or(min + 3, |max| (max as usize).min(min + 3));
            let count = min + rng.below(max - min + 1);
            let item = schema.get("items").cloned().unwrap_or(json!({}));
            Value::Array((0..count).map(|_| valid(document, &item, rng)).collect())
        }
        _ => {
            let mut fields = Map::new();
            let required: Vec<&str> = schema
                .get("required")
                .and_then(Value::as_array)
                .map(|r| r.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
                for (name, property) in properties {
                    if required.contains(&name.as_str()) || rng.chance(50) {
                        fields.insert(name.clone(), valid(document, property, rng));
                    }
                }
            }
            // `dependentSchemas`: with the field present, its schema's fields too.
            if let Some(dependent) = schema.get("dependentSchemas").and_then(Value::as_object) {
                for (name, dependent_schema) in dependent {
                    if !fields.contains_key(name) {
                        continue;
                    }
                    let extra = dependent_schema["properties"].as_object();
                    for (need, need_schema) in extra.into_iter().flatten() {
                        if !check(
                            document,
                            need_schema,
                            fields.get(need).unwrap_or(&Value::Null),
                        )
                        .is_empty()
                        {
                            fields.insert(need.clone(), valid(document, need_schema, rng));
                        }
                    }
                }
            }
            Value::Object(fields)
        }
    }
}

fn valid_string(schema: &Value, rng: &mut Rng) -> Value {
    let min = schema.get("minLength").and_then(Value::as_u64).unwrap_or(0) as usize;
    let max = schema
        .get("maxLength")
        .and_then(Value::as_u64)
        .map_or(min + 24, |max| max as usize);
    let text = match schema.get("format").and_then(Value::as_str) {
        Some("uuid") => uuid::Uuid::from_u64_pair(rng.next_u64(), rng.next_u64()).to_string(),
        Some("date-time") => {
            let seconds = 1_700_000_000 + rng.below(200_000_000) as i64;
            chrono::DateTime::from_timestamp(seconds, 0)
                .unwrap_or_default()
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        }
        Some("date") => {
            let seconds = 1_700_000_000 + rng.below(200_000_000) as i64;
            chrono::DateTime::from_timestamp(seconds, 0)
                .unwrap_or_default()
                .date_naive()
                .to_string()
        }
        Some("time-zone") => rng.pick(TIME_ZONES).to_string(),
        Some("email") => format!(
            "{}@{}.example",
            random_word(rng, 1, 20),
            random_word(rng, 1, 20)
        ),
        Some("uri") => format!(
            "https://{}.example/{}",
            random_word(rng, 1, 10),
            random_word(rng, 0, 10)
        ),
        _ => match schema.get("pattern").and_then(Value::as_str) {
            Some(DIGITS) => {
                let length = 1 + rng.below(12.min(max.max(1)));
                (0..length)
                    .map(|i| {
                        let digit = rng.below(10) as u8;
                        (b'0' + if i == 0 { digit.max(1) } else { digit }) as char
                    })
                    .collect()
            }
            Some(LOWER3) => (0..3)
                .map(|_| (b'a' + rng.below(26) as u8) as char)
                .collect(),
            Some(VISIBLE) => random_word(rng, min.max(1), max.min(40)),
            Some(NOT_BLANK) => {
                // At least 4 characters: distinct ids stay distinct (plan ids must be).
                let mut text = random_text(rng, min.max(4) - 1, max.saturating_sub(1));
                if rng.chance(50) {
                    text.insert(0, 'x');
                } else {
                    text.push('x');
                }
                text
            }
            Some(other) => panic!("the generator does not know the pattern {other}"),
            None => random_text(rng, min, max),
        },
    };
    Value::String(text)
}

/// A value of another JSON type than any `schema` allows.
fn wrong_type(document: &Value, schema: &Value, rng: &mut Rng) -> Option<Value> {
    let schema = resolve(document, schema);
    let candidates = [
        json!("text"),
        json!(7),
        json!(2.5),
        json!(true),
        json!([1]),
        json!({"x": 1}),
        Value::Null,
    ];
    let wrong: Vec<&Value> = candidates
        .iter()
        .filter(|candidate| !check(document, schema, candidate).is_empty())
        .collect();
    (!wrong.is_empty()).then(|| (*rng.pick(&wrong)).clone())
}

/// A value that breaks one bound or rule of a scalar `schema`, if it has one.
fn out_of_bounds(document: &Value, schema: &Value, rng: &mut Rng) -> Option<Value> {
    let schema = resolve(document, schema);
    let mut options = Vec::new();
    let types = types_of(schema);
    if types.iter().any(|t| t == "integer") {
        if let Some(min) = schema.get("minimum").and_then(Value::as_i64) {
            options.push(json!(min - 1));
        }
        if let Some(max) = schema.get("maximum").and_then(Value::as_i64) {
            options.push(json!(max.saturating_add(1)));
        }
        options.push(json!(1.5));
    }
    if types.iter().any(|t| t == "string") {
        if let Some(min) = schema.get("minLength").and_then(Value::as_u64) {
            if min > 0 {
                options.push(json!(""));
            }
        }
        if let Some(max) = schema.get("maxLength").and_then(Value::as_u64) {
            options.push(json!("y".repeat(max as usize + 1)));
        }
        match schema.get("pattern").and_then(Value::as_str) {
            Some(NOT_BLANK) => options.push(json!("   ")),
            Some(DIGITS) => options.push(json!("12ab")),
            Some(LOWER3) => options.push(json!("EUR")),
            Some(VISIBLE) => options.push(json!("two words")),
            _ => {}
        }
        match schema.get("format").and_then(Value::as_str) {
            Some("uuid") => options.push(json!("not-a-uuid")),
            Some("date-time") | Some("date") => options.push(json!("yesterday")),
            Some("time-zone") => options.push(json!("Mars/Olympus_Mons")),
            Some("email") => options.push(json!("guest.example.com")),
            _ => {}
        }
    }
    if schema.get("enum").is_some() {
        options.push(json!("no-such-value"));
    }
    let options: Vec<Value> = options
        .into_iter()
        .filter(|option| !check(document, schema, option).is_empty())
        .collect();
    (!options.is_empty()).then(|| rng.pick(&options).clone())
}

/// `body` (valid by `schema`) broken in exactly one place, with a word on how; `None`
/// when the schema allows anything.
pub fn invalid(
    document: &Value,
    schema: &Value,
    body: &Value,
    rng: &mut Rng,
) -> Option<(String, Value)> {
    let schema = resolve(document, schema);
    let mut mutations: Vec<(String, Value)> = Vec::new();
    if let (Some(fields), Some(properties)) = (
        body.as_object(),
        schema.get("properties").and_then(Value::as_object),
    ) {
        for name in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            let mut broken = fields.clone();
            broken.remove(name);
            mutations.push((
                format!("without the required {name}"),
                Value::Object(broken),
            ));
        }
        for (name, property) in properties {
            let current = fields.get(name).cloned();
            let field_value = current
                .clone()
                .unwrap_or_else(|| valid(document, property, rng));
            let mut candidates = Vec::new();
            if let Some(wrong) = wrong_type(document, property, rng) {
                candidates.push((format!("{name} of a wrong type"), wrong));
            }
            if let Some(wrong) = out_of_bounds(document, property, rng) {
                candidates.push((format!("{name} out of bounds"), wrong));
            }
            // One level down: an element of an array of objects, or a nested object.
            let inner_schema = resolve(document, property);
            if let Some(items) = field_value.as_array().filter(|items| !items.is_empty()) {
                if let Some(item_schema) = inner_schema.get("items") {
                    if let Some((how, broken_item)) = invalid(document, item_schema, &items[0], rng)
                    {
                        let mut broken = items.clone();
                        broken[0] = broken_item;
                        candidates.push((format!("{name}[0] {how}"), Value::Array(broken)));
                    }
                }
            }
            for (how, wrong) in candidates {
                let mut broken = fields.clone();
                broken.insert(name.clone(), wrong);
                mutations.push((how, Value::Object(broken)));
            }
        }
        if schema.get("additionalProperties") == Some(&Value::Bool(false)) {
            let mut broken = fields.clone();
            broken.insert("unexpected_field".into(), json!(1));
            mutations.push(("with an unknown field".into(), Value::Object(broken)));
        }
    }
    if let Some(wrong) = wrong_type(document, schema, rng) {
        mutations.push(("of a wrong type".into(), wrong));
    }
    let mutations: Vec<(String, Value)> = mutations
        .into_iter()
        .filter(|(_, value)| !check(document, schema, value).is_empty())
        .collect();
    (!mutations.is_empty()).then(|| rng.pick(&mutations).clone())
}

/// A scalar parameter value broken in one way (wrong type or out of bounds), as text.
pub fn invalid_parameter(document: &Value, schema: &Value, rng: &mut Rng) -> Option<String> {
    let mut options = Vec::new();
    if let Some(value) = out_of_bounds(document, schema, rng) {
        options.push(value);
    }
    if let Some(value) = wrong_type(document, schema, rng) {
        // Objects and arrays do not travel in a query string; a word or a fraction does.
        if value.is_string() || value.is_number() || value.is_boolean() {
            options.push(value);
        }
    }
    let options: Vec<String> = options
        .into_iter()
        .map(|value| parameter_text(&value))
        // As text, "7" is also a valid string: keep only what is invalid as text too.
        .filter(|text| {
            !check(document, schema, &parse_parameter(document, schema, text)).is_empty()
        })
        .collect();
    (!options.is_empty()).then(|| rng.pick(&options).clone())
}

/// How a parameter value travels in a URL.
pub fn parameter_text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// A parameter's text read as the schema's type would read it (for checking).
pub fn parse_parameter(document: &Value, schema: &Value, text: &str) -> Value {
    let schema = resolve(document, schema);
    let types = types_of(schema);
    if types.iter().any(|t| t == "integer" || t == "number") {
        if let Ok(number) = serde_json::from_str::<Value>(text) {
            if number.is_number() {
                return number;
            }
        }
    }
    if types.iter().any(|t| t == "boolean") && (text == "true" || text == "false") {
        return Value::Bool(text == "true");
    }
    Value::String(text.to_string())
}

#[test]
fn the_checker_finds_what_breaks_a_schema() {
    let document = json!({"components": {"schemas": {"Plan": {
        "type": "object", "required": ["minutes"], "additionalProperties": false,
        "properties": {"minutes": {"type": "integer", "minimum": 1, "maximum": 1440},
                       "name": {"type": ["string", "null"], "pattern": NOT_BLANK},
                       "at": {"type": "string", "format": "date-time"}}}}}});
    let schema = json!({"$ref": "#/components/schemas/Plan"});
    assert!(check(&document, &schema, &json!({"minutes": 30, "name": null})).is_empty());
    for (bad, says) in [
        (json!({"minutes": 0}), "below the minimum"),
        (json!({"minutes": 1.5}), "not of type integer"),
        (json!({"name": "x"}), "required field minutes"),
        (json!({"minutes": 1, "extra": 1}), "does not allow"),
        (json!({"minutes": 1, "name": "  "}), "does not match"),
        (json!({"minutes": 1, "at": "soon"}), "not a \"date-time\""),
    ] {
        let errors = check(&document, &schema, &bad);
        assert!(
            errors.iter().any(|error| error.contains(says)),
            "{bad} should be refused with {says:?}, got {errors:?}"
        );
    }
    let mut rng = Rng::new(7);
    for _ in 0..200 {
        let value = valid(&document, &schema, &mut rng);
        assert!(check(&document, &schema, &value).is_empty(), "{value}");
        let (how, broken) = invalid(&document, &schema, &value, &mut rng).unwrap();
        assert!(
            !check(&document, &schema, &broken).is_empty(),
            "{how}: {broken}"
        );
    }
}
