//! The API contract, checked against the running server: for every operation of the
//! served OpenAPI document, a seeded generator makes many requests from the schema —
//! valid ones, and ones broken in one place (wrong type, out of bounds, a required field
//! missing, an unknown field, malformed JSON, a wrong content type, no token) — sends them
//! to a test app wired to the simulators (and to one without them, for the 503s), and
//! checks that every answer's status is listed for the operation, that its body matches
//! the documented schema, that a request valid by the schema is never refused as invalid
//! (400/422) and an invalid one never accepted. A planted mismatch shows the run notices.
//!
//! Run it alone with `cargo test --test api conformance`; `CONFORMANCE_CASES=N` changes
//! the requests per operation and `CONFORMANCE_SEED=N` the seed (the failures name both).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use latchkey::startup::BuildOptions;
use reqwest::header::CONTENT_TYPE;
use secrecy::SecretString;
use serde_json::{json, Value};

use crate::contract_check::{self, Rng};
use crate::helpers::{
    eventually, spawn_app_with_settings, Backend, TestApp, TestDatabase, ADMIN_TOKEN,
};
use crate::on_both_backends;
use crate::sim_helpers::{use_ttlock_sim, GATEWAY_LOCK, PLUG};
use crate::stripe_support::{API_KEY, SECRET};

/// What a request was made to test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Valid by the schema, with an admin's token: never 400 or 422.
    Valid,
    /// The body broken in one place: a 4xx.
    InvalidBody,
    /// One parameter broken: a 4xx.
    InvalidParameter,
    /// Not JSON at all: 400.
    MalformedJson,
    /// JSON sent as `text/plain`: 400.
    WrongContentType,
    /// No credentials on a route that needs them: 401.
    NoToken,
    /// An auditor's token: 403 on a write, whatever the operation lists on a read.
    Auditor,
}

const KINDS: &[Kind] = &[
    Kind::Valid,
    Kind::Valid,
    Kind::Valid,
    Kind::InvalidBody,
    Kind::InvalidParameter,
    Kind::Valid,
    Kind::MalformedJson,
    Kind::WrongContentType,
    Kind::NoToken,
    Kind::Auditor,
];

/// Known values for path parameters, by name, so that many requests reach real records.
#[derive(Default, Clone)]
pub struct Fixtures(HashMap<String, Vec<String>>);

impl Fixtures {
    pub fn add(&mut self, name: &str, value: impl Into<String>) {
        self.0
            .entry(name.to_string())
            .or_default()
            .push(value.into());
    }
}

/// The run's settings.
pub struct Run<'a> {
    pub address: &'a str,
    pub client: &'a reqwest::Client,
    pub document: &'a Value,
    pub fixtures: &'a Fixtures,
    pub admin_token: &'a str,
    pub auditor_token: &'a str,
    pub cases: usize,
    pub seed: u64,
    /// Only operations whose `METHOD path` contains this (all when empty).
    pub only: &'a str,
}

/// What the run found: the requests sent, per status, and every disagreement.
#[derive(Default, Debug)]
pub struct Report {
    pub requests: usize,
    pub statuses: BTreeMap<u16, usize>,
    pub failures: Vec<String>,
}

struct Operation<'a> {
    method: reqwest::Method,
    path: &'a str,
    spec: &'a Value,
}

impl Operation<'_> {
    fn name(&self) -> String {
        format!("{} {}", self.method, self.path)
    }

    fn parameters(&self) -> Vec<&Value> {
        self.spec
            .get("parameters")
            .and_then(Value::as_array)
            .map(|all| all.iter().collect())
            .unwrap_or_default()
    }

    fn json_body_schema(&self) -> Option<&Value> {
        self.spec
            .pointer("/requestBody/content/application~1json/schema")
    }

    /// A body read as raw bytes (`type: string`, the webhook's signed event): the server
    /// checks the signature before anything else, so only valid requests are planned.
    fn raw_body(&self) -> bool {
        self.json_body_schema()
            .is_some_and(|schema| schema.get("type") == Some(&json!("string")))
    }

    fn body_required(&self) -> bool {
        self.spec
            .pointer("/requestBody/required")
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }

    fn secured(&self) -> bool {
        self.spec
            .get("security")
            .and_then(Value::as_array)
            .is_some_and(|all| all.iter().any(|s| s.get("bearer").is_some()))
    }
}

fn operations(document: &Value) -> Vec<Operation<'_>> {
    let mut found = Vec::new();
    for (path, item) in document["paths"].as_object().expect("paths").iter() {
        for method in ["get", "post", "put", "patch", "delete"] {
            if let Some(spec) = item.get(method) {
                found.push(Operation {
                    method: method.to_uppercase().parse().expect("a method"),
                    path,
                    spec,
                });
            }
        }
    }
    found
}

/// Percent-encodes one path segment or query value.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// One request, ready to send, and what it is for.
struct Planned {
    kind: Kind,
    url: String,
    headers: Vec<(String, String)>,
    body: Option<(String, Vec<u8>)>,
    token: Option<String>,
    description: String,
}

fn plan(run: &Run, operation: &Operation, kind: Kind, rng: &mut Rng) -> Option<Planned> {
    let document = run.document;
    let body_schema = operation.json_body_schema();
    let parameters = operation.parameters();
    // Which parameter to break, for InvalidParameter.
    let breakable: Vec<usize> = parameters
        .iter()
        .enumerate()
        .filter(|(_, p)| p["in"] != "path")
        .filter(|(_, p)| {
            contract_check::invalid_parameter(document, &p["schema"], &mut Rng::new(1)).is_some()
        })
        .map(|(index, _)| index)
        .collect();
    let broken_parameter = match kind {
        Kind::InvalidParameter if breakable.is_empty() => return None,
        Kind::InvalidParameter => Some(*rng.pick(&breakable)),
        _ => None,
    };
    let needs_body = matches!(
        kind,
        Kind::InvalidBody | Kind::MalformedJson | Kind::WrongContentType
    );
    if needs_body && (body_schema.is_none() || operation.raw_body()) {
        return None;
    }
    if matches!(kind, Kind::NoToken | Kind::Auditor) && !operation.secured() {
        return None;
    }
    let mut path = operation.path.to_string();
    let mut query = Vec::new();
    let mut headers = Vec::new();
    let mut notes = Vec::new();
    for (index, parameter) in parameters.iter().enumerate() {
        let name = parameter["name"].as_str().expect("a parameter name");
        let schema = &parameter["schema"];
        let location = parameter["in"].as_str().unwrap_or_default();
        let required = parameter["required"].as_bool().unwrap_or(false);
        let text = if broken_parameter == Some(index) {
            let text = contract_check::invalid_parameter(document, schema, rng)?;
            notes.push(format!("{name}={text:?} (invalid)"));
            text
        } else {
            let known = run.fixtures.0.get(name).filter(|_| location == "path");
            if !required && rng.chance(50) {
                continue;
            }
            // Cursors are only those the server returned: a made-up one is not valid.
            if schema["format"] == "cursor" {
                continue;
            }
            match known {
                Some(values) if rng.chance(75) => rng.pick(values).clone(),
                _ => contract_check::parameter_text(&contract_check::valid(document, schema, rng)),
            }
        };
        // `.` and `..` are not segments a URL keeps (clients resolve them away).
        let text = if location == "path" && (text == "." || text == "..") {
            format!("x{text}")
        } else {
            text
        };
        match location {
            "path" => path = path.replace(&format!("{{{name}}}"), &encode(&text)),
            "query" => query.push((name.to_string(), text)),
            "header" => headers.push((name.to_string(), text)),
            other => panic!("{} has a parameter in {other}", operation.name()),
        }
    }
    // `x-not-before`: a parameter that may not come before another (a range's end).
    for index in 0..query.len() {
        let (name, text) = query[index].clone();
        let schema = parameters
            .iter()
            .find(|p| p["name"] == name.as_str() && p["in"] == "query")
            .map(|p| &p["schema"]);
        if let Some(other) = schema.and_then(|s| s["x-not-before"].as_str()) {
            if let Some(before) = query.iter().position(|(n, _)| n == other) {
                if broken_parameter.is_none() && text < query[before].1 {
                    let earlier = query[before].1.clone();
                    query[before].1 = text;
                    query[index].1 = earlier;
                }
            }
        }
    }
    let query: Vec<String> = query
        .iter()
        .map(|(name, text)| format!("{}={}", encode(name), encode(text)))
        .collect();
    let mut url = format!("{}{path}", run.address);
    if !query.is_empty() {
        url = format!("{url}?{}", query.join("&"));
    }
    let body = match (kind, body_schema) {
        (_, None) => None,
        (Kind::MalformedJson, Some(_)) => {
            Some(("application/json".to_string(), b"{\"not json".to_vec()))
        }
        (_, Some(schema)) => {
            let mut value = contract_check::valid(document, schema, rng);
            // Fields that name a record (a device's plan) take a known value.
            if let Some(fields) = value.as_object_mut() {
                for (name, field) in fields.iter_mut() {
                    if let Some(known) = run.fixtures.0.get(&format!("body:{name}")) {
                        *field = json!(rng.pick(known));
                    }
                }
            }
            let value = if kind == Kind::InvalidBody {
                let (how, broken) = contract_check::invalid(document, schema, &value, rng)?;
                notes.push(format!("body {how}"));
                broken
            } else {
                value
            };
            let content_type = if kind == Kind::WrongContentType {
                "text/plain"
            } else {
                "application/json"
            };
            if kind == Kind::Valid && !operation.body_required() && rng.chance(20) {
                None
            } else {
                Some((
                    content_type.to_string(),
                    serde_json::to_vec(&value).expect("JSON"),
                ))
            }
        }
    };
    let token = match kind {
        Kind::NoToken => None,
        Kind::Auditor => Some(run.auditor_token.to_string()),
        _ if operation.secured() => Some(run.admin_token.to_string()),
        _ => None,
    };
    let shown_body = body
        .as_ref()
        .map(|(content_type, bytes)| {
            format!(" [{content_type}] {}", String::from_utf8_lossy(bytes))
        })
        .unwrap_or_default();
    Some(Planned {
        kind,
        description: format!(
            "{kind:?} {} {}{shown_body}{}",
            operation.method,
            url.trim_start_matches(run.address),
            if notes.is_empty() {
                String::new()
            } else {
                format!(" — {}", notes.join(", "))
            }
        ),
        url,
        headers,
        body,
        token,
    })
}

/// Sends the planned requests of every operation and checks each answer.
pub async fn run(run: &Run<'_>) -> Report {
    let mut report = Report::default();
    let mut rng = Rng::new(run.seed);
    for operation in operations(run.document) {
        if !operation.name().contains(run.only) {
            continue;
        }
        for case in 0..run.cases {
            let kind = KINDS[case % KINDS.len()];
            let Some(planned) = plan(run, &operation, kind, &mut rng) else {
                continue;
            };
            let problems = send_and_check(run, &operation, &planned, &mut report).await;
            for problem in problems {
                report.failures.push(format!(
                    "{} (seed {}, case {case}): {problem}\n    request: {}",
                    operation.name(),
                    run.seed,
                    planned.description
                ));
            }
        }
    }
    report
}

async fn send_and_check(
    run: &Run<'_>,
    operation: &Operation<'_>,
    planned: &Planned,
    report: &mut Report,
) -> Vec<String> {
    let mut request = run.client.request(operation.method.clone(), &planned.url);
    if let Some(token) = &planned.token {
        request = request.bearer_auth(token);
    }
    for (name, value) in &planned.headers {
        request = request.header(name, value);
    }
    if let Some((content_type, bytes)) = &planned.body {
        request = request
            .header(CONTENT_TYPE, content_type)
            .body(bytes.clone());
    }
    let response = request.send().await.expect("the test app answers");
    let status = response.status().as_u16();
    let media_type = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .map(|value| {
            value
                .split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_string()
        });
    let bytes = response.bytes().await.expect("a body");
    report.requests += 1;
    *report.statuses.entry(status).or_default() += 1;
    let mut problems = Vec::new();
    let shown = String::from_utf8_lossy(&bytes[..bytes.len().min(300)]).to_string();
    let Some(documented) = operation.spec["responses"].get(status.to_string()) else {
        problems.push(format!("status {status} is not documented (body {shown})"));
        return problems;
    };
    if status == 500 {
        problems.push(format!("500 (body {shown})"));
    }
    match planned.kind {
        Kind::Valid if status == 400 || status == 422 => problems.push(format!(
            "a request valid by the schema was refused with {status}: {shown}"
        )),
        Kind::InvalidBody | Kind::InvalidParameter if !(400..500).contains(&status) => problems
            .push(format!(
                "a request invalid by the schema was answered {status}: {shown}"
            )),
        Kind::MalformedJson | Kind::WrongContentType if status != 400 => problems.push(format!(
            "a body that is not JSON was answered {status}, not 400: {shown}"
        )),
        Kind::NoToken if status != 401 => {
            problems.push(format!("no token was answered {status}, not 401"))
        }
        // Auditors read and change nothing: every write refuses them.
        Kind::Auditor if operation.method != reqwest::Method::GET && status != 403 => {
            problems.push(format!("an auditor's write was answered {status}, not 403"))
        }
        _ => {}
    }
    problems.extend(check_body(
        run.document,
        documented,
        media_type.as_deref(),
        &bytes,
    ));
    problems
}

/// Checks a response body against the response object the document gives its status.
pub fn check_body(
    document: &Value,
    documented: &Value,
    media_type: Option<&str>,
    bytes: &[u8],
) -> Vec<String> {
    let documented = contract_check::resolve(document, documented);
    let Some(content) = documented.get("content").and_then(Value::as_object) else {
        return if bytes.is_empty() {
            Vec::new()
        } else {
            vec![format!(
                "a body the document does not describe: {}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
            )]
        };
    };
    let Some(media_type) = media_type else {
        return vec!["no Content-Type, while the document describes a body".into()];
    };
    let Some(media) = content.get(media_type) else {
        return vec![format!(
            "Content-Type {media_type} is not one of the documented {:?}",
            content.keys().collect::<Vec<_>>()
        )];
    };
    if media_type != "application/json" {
        return Vec::new();
    }
    let value: Value = match serde_json::from_slice(bytes) {
        Ok(value) => value,
        Err(error) => return vec![format!("the JSON body does not parse: {error}")],
    };
    match media.get("schema") {
        Some(schema) => contract_check::check(document, schema, &value)
            .into_iter()
            .map(|error| format!("body: {error} (in {value})"))
            .collect(),
        None => vec!["a JSON body without a documented schema".into()],
    }
}

fn cases(default: usize) -> usize {
    std::env::var("CONFORMANCE_CASES")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

fn seed() -> u64 {
    std::env::var("CONFORMANCE_SEED")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(20_261_205)
}

/// The simulators a conformance app talks to; kept alive for the app's lifetime.
pub struct Simulated {
    pub app: TestApp,
    _stripe: latchkey::sim::stripe::StripeSimHandle,
    _ttlock: latchkey::sim::ttlock::TtlockSimHandle,
    _shelly: latchkey::sim::shelly::ShellySimHandle,
}

/// An app wired to the Stripe, TTLock and Shelly simulators, with a door, a device and a
/// payment to aim at.
pub async fn simulated_app(backend: Backend) -> (Simulated, Fixtures) {
    simulated_app_with(backend, |_| {}).await
}

/// [`simulated_app`] with the settings changed by `adjust` after the simulators'.
pub async fn simulated_app_with(
    backend: Backend,
    adjust: impl FnOnce(&mut latchkey::config::Settings),
) -> (Simulated, Fixtures) {
    let stripe = crate::stripe_support::spawn_sim().await;
    let ttlock = latchkey::sim::ttlock::spawn(
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        Default::default(),
    )
    .unwrap();
    let shelly = latchkey::sim::shelly::spawn(
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        crate::sim_helpers::test_shelly_sim_config(),
    )
    .unwrap();
    let stripe_base = stripe.url();
    let app = spawn_app_with_settings(
        TestDatabase::create(backend).await,
        BuildOptions::default(),
        |settings| {
            settings.stripe.secret_key = Some(SecretString::from(API_KEY.to_string()));
            settings.stripe.api_base = Some(stripe_base.parse().unwrap());
            settings.stripe.webhook_secrets = vec![SecretString::from(SECRET.to_string())];
            use_ttlock_sim(settings, &ttlock);
            let cloud = shelly.cloud_config();
            settings.shelly.server = Some(cloud.server.clone());
            settings.shelly.auth_key = Some(cloud.auth_key.clone());
            adjust(settings);
        },
    )
    .await;
    stripe.set_webhook_url(format!("{}/api/stripe/webhook", app.address));
    let fixtures = seed_records(&app, Some(&stripe)).await;
    (
        Simulated {
            app,
            _stripe: stripe,
            _ttlock: ttlock,
            _shelly: shelly,
        },
        fixtures,
    )
}

/// A door, a device and a started payment; their ids become path-parameter fixtures.
async fn seed_records(
    app: &TestApp,
    stripe: Option<&latchkey::sim::stripe::StripeSimHandle>,
) -> Fixtures {
    let door_uid = GATEWAY_LOCK.to_string();
    let door = json!({"uid": door_uid, "name": "Room 12", "location": "Lyon",
                      "time_zone": "Europe/Paris", "price": 1500, "currency": "eur", "access_minutes": 60});
    let response = app.post_json("/api/doors", Some(ADMIN_TOKEN), &door).await;
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    let device = json!({"uid": "washer", "name": "Washer", "location": "Lyon", "time_zone": "Europe/Paris",
                        "shelly_device_id": PLUG, "shelly_channel": 0,
                        "plans": [{"plan_id": "p30", "name": "30 minutes", "minutes": 30, "price": 300, "currency": "eur"}]});
    let response = app
        .post_json("/api/devices", Some(ADMIN_TOKEN), &device)
        .await;
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    let mut fixtures = Fixtures::default();
    for name in ["uid", "door_uid"] {
        fixtures.add(name, &door_uid);
    }
    for name in ["uid", "device_uid"] {
        fixtures.add(name, "washer");
    }
    fixtures.add("aggregate_type", "Door");
    fixtures.add("aggregate_type", "Payment");
    fixtures.add("id", &door_uid);
    let checkout = app
        .post_json(
            &format!("/api/checkout/door/{door_uid}"),
            None,
            &json!({"email": "guest@example.com"}),
        )
        .await;
    if checkout.status() == 201 {
        let started: Value = checkout.json().await.unwrap();
        let payment_id = started["payment_id"].as_str().unwrap().to_string();
        fixtures.add("id", &payment_id);
        if let Some(token) = started["status_url"]
            .as_str()
            .and_then(|url| url.rsplit('/').next())
        {
            fixtures.add("token", token);
        }
    }
    fixtures.add("body:plan_id", "p30");
    // A door payment paid through the simulator: refunds and code actions can succeed.
    if let Some(stripe) = stripe {
        let started = app
            .post_json(
                &format!("/api/checkout/door/{door_uid}"),
                None,
                &json!({"email": "paid@example.com"}),
            )
            .await;
        assert_eq!(started.status(), 201);
        let started: Value = started.json().await.unwrap();
        let payment_id = started["payment_id"].as_str().unwrap().to_string();
        let (payment, _) = app.state.buses.payments.load(&payment_id).await.unwrap();
        let session = payment.checkout_session_id().unwrap().to_string();
        stripe.pay(&session, "4242424242424242").unwrap();
        let paid = eventually(200, Duration::from_millis(25), || async {
            let (payment, _) = app.state.buses.payments.load(&payment_id).await.unwrap();
            payment.status() == latchkey_aggregates::payment::PaymentStatus::Succeeded
        })
        .await;
        assert!(paid, "the simulator's payment did not succeed within 5 s");
        fixtures.add("id", &payment_id);
        fixtures.add("id", &payment_id);
    }
    fixtures
}

async fn the_api_answers_as_its_document_says(backend: Backend) {
    let started = std::time::Instant::now();
    let (simulated, fixtures) = simulated_app(backend).await;
    let app = &simulated.app;
    let document: Value = app.get("/api/openapi.json").await.json().await.unwrap();
    let auditor = app.token(latchkey::http::auth::Role::Auditor).await;
    let cases = cases(match backend {
        Backend::Sqlite => 40,
        Backend::Postgres => 20,
    });
    let report = run(&Run {
        address: &app.address,
        client: &app.client,
        document: &document,
        fixtures: &fixtures,
        admin_token: ADMIN_TOKEN,
        auditor_token: &auditor,
        cases,
        seed: seed(),
        only: "",
    })
    .await;
    println!(
        "conformance ({backend:?}, simulators): {} requests in {:.1} s, statuses {:?}",
        report.requests,
        started.elapsed().as_secs_f64(),
        report.statuses
    );
    assert!(
        report.failures.is_empty(),
        "{} failures:\n{}",
        report.failures.len(),
        report.failures.join("\n")
    );
    // The run reached the records and the integrations, not only 404s and 422s.
    for status in [200, 201, 404, 422, 400, 401] {
        assert!(
            report.statuses.contains_key(&status),
            "no request was answered {status}: {:?}",
            report.statuses
        );
    }
    simulated.app.stop().await;
}

async fn without_integrations_the_api_answers_as_its_document_says(backend: Backend) {
    let started = std::time::Instant::now();
    let app = crate::helpers::spawn_app(backend).await;
    let document: Value = app.get("/api/openapi.json").await.json().await.unwrap();
    let auditor = app.token(latchkey::http::auth::Role::Auditor).await;
    let mut fixtures = Fixtures::default();
    let door = json!({"uid": GATEWAY_LOCK.to_string(), "name": "Room 12", "location": "Lyon",
                      "time_zone": "Europe/Paris", "price": 1500, "currency": "eur", "access_minutes": 60});
    assert_eq!(
        app.post_json("/api/doors", Some(ADMIN_TOKEN), &door)
            .await
            .status(),
        201
    );
    fixtures.add("uid", GATEWAY_LOCK.to_string());
    fixtures.add("door_uid", GATEWAY_LOCK.to_string());
    let report = run(&Run {
        address: &app.address,
        client: &app.client,
        document: &document,
        fixtures: &fixtures,
        admin_token: ADMIN_TOKEN,
        auditor_token: &auditor,
        cases: cases(10),
        seed: seed() + 1,
        only: "",
    })
    .await;
    println!(
        "conformance ({backend:?}, no integrations): {} requests in {:.1} s, statuses {:?}",
        report.requests,
        started.elapsed().as_secs_f64(),
        report.statuses
    );
    assert!(
        report.failures.is_empty(),
        "{} failures:\n{}",
        report.failures.len(),
        report.failures.join("\n")
    );
    assert!(
        report.statuses.contains_key(&503),
        "no request met an unconfigured integration: {:?}",
        report.statuses
    );
    app.stop().await;
}

/// A copy of the document with one status taken away and one response field renamed:
/// the same run against the same server must report both.
async fn a_planted_mismatch_is_caught(backend: Backend) {
    let (simulated, fixtures) = simulated_app(backend).await;
    let app = &simulated.app;
    let mut document: Value = app.get("/api/openapi.json").await.json().await.unwrap();
    let auditor = app.token(latchkey::http::auth::Role::Auditor).await;
    let responses = document
        .pointer_mut("/paths/~1api~1doors/post/responses")
        .and_then(Value::as_object_mut)
        .expect("POST /api/doors has responses");
    assert!(responses.remove("422").is_some());
    let schemas = document["components"]["schemas"]
        .as_object_mut()
        .expect("schemas");
    let door = schemas.get_mut("Door").expect("Door is documented");
    door["required"]
        .as_array_mut()
        .expect("Door lists required fields")
        .push(json!("door_number"));
    let report = run(&Run {
        address: &app.address,
        client: &app.client,
        document: &document,
        fixtures: &fixtures,
        admin_token: ADMIN_TOKEN,
        auditor_token: &auditor,
        cases: 30,
        seed: seed(),
        only: "POST /api/doors",
    })
    .await;
    let all = report.failures.join("\n");
    assert!(
        all.contains("status 422 is not documented"),
        "the removed 422 went unnoticed:\n{all}"
    );
    assert!(
        all.contains("the required field door_number is missing"),
        "the changed schema went unnoticed:\n{all}"
    );
    simulated.app.stop().await;
}

/// The document's own promises that need no request: every error answer has the one
/// error shape, and every operator route declares its security.
async fn the_document_has_one_error_shape_and_declares_security(backend: Backend) {
    let app = crate::helpers::spawn_app(backend).await;
    let document: Value = app.get("/api/openapi.json").await.json().await.unwrap();
    let public = [
        "/api/checkout/",
        "/api/access/",
        "/api/session/",
        "/qr.svg",
        "/api/stripe/webhook",
    ];
    let mut problems = Vec::new();
    for operation in operations(&document) {
        let name = operation.name();
        for (status, response) in operation.spec["responses"].as_object().unwrap() {
            if status.starts_with('2') {
                continue;
            }
            let schema = response.pointer("/content/application~1json/schema/$ref");
            if schema != Some(&json!("#/components/schemas/ErrorBody")) {
                problems.push(format!("{name} {status} is not an ErrorBody: {response}"));
            }
        }
        let is_public = public.iter().any(|part| operation.path.contains(part));
        if operation.secured() == is_public {
            problems.push(format!("{name}: security is {}", operation.secured()));
        }
        if operation.secured() {
            let statuses: &[&str] = if operation.method == reqwest::Method::GET {
                &["401"]
            } else {
                &["401", "403"]
            };
            for status in statuses {
                if operation.spec["responses"].get(*status).is_none() {
                    problems.push(format!("{name} does not list {status}"));
                }
            }
        }
        if operation.json_body_schema().is_some() && !operation.raw_body() {
            for status in ["400", "413", "422"] {
                if operation.spec["responses"].get(status).is_none() {
                    problems.push(format!("{name} takes JSON but does not list {status}"));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    app.stop().await;
}

on_both_backends!(
    the_api_answers_as_its_document_says,
    without_integrations_the_api_answers_as_its_document_says,
    a_planted_mismatch_is_caught,
    the_document_has_one_error_shape_and_declares_security,
);

/// `/api/reference`: one HTML page made from the document, with every operation and every
/// schema, nothing loaded from elsewhere (it works offline), linked from the dashboard.
async fn the_api_reference_lists_every_operation_and_works_offline(backend: Backend) {
    let app = crate::helpers::spawn_app(backend).await;
    let document: Value = app.get("/api/openapi.json").await.json().await.unwrap();
    let response = app.get("/api/reference").await;
    assert_eq!(response.status(), 200);
    assert!(response.headers()[CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let html = response.text().await.unwrap();
    let mut operations_listed = 0;
    for operation in operations(&document) {
        let anchor = latchkey::http::reference::anchor(
            &operation.method.as_str().to_lowercase(),
            operation.path,
        );
        assert!(
            html.contains(&format!("id=\"{anchor}\"")),
            "{} has no section",
            operation.name()
        );
        assert!(
            html.contains(&format!(
                "<code>{} {}</code>",
                operation.method, operation.path
            )),
            "{} is not named",
            operation.name()
        );
        for status in operation.spec["responses"].as_object().unwrap().keys() {
            assert!(html.contains(&format!("<td>{status}</td>")));
        }
        operations_listed += 1;
    }
    assert!(
        operations_listed >= 40,
        "only {operations_listed} operations"
    );
    for name in document["components"]["schemas"]
        .as_object()
        .unwrap()
        .keys()
    {
        assert!(
            html.contains(&format!("id=\"schema-{name}\"")),
            "schema {name}"
        );
    }
    assert!(html.contains("access_minutes") && html.contains("at most 10080"));
    // Nothing from another origin: every src and href is a path or an anchor here.
    for attribute in ["src=\"", "href=\""] {
        for value in html.split(attribute).skip(1) {
            let value = &value[..value.find('"').unwrap()];
            assert!(
                value.starts_with('/') || value.starts_with('#'),
                "{attribute}{value}\" leaves the server"
            );
        }
    }
    assert!(!html.contains("<script"), "the reference needs no script");
    let operator =
        crate::dashboard_pages::login(&app.database, latchkey::http::auth::Role::Auditor).await;
    let (status, dashboard) = crate::dashboard_pages::page(&app, "/dashboard", &operator).await;
    assert_eq!(status, 200);
    assert!(
        dashboard.contains("href=\"/api/reference\""),
        "no link from the dashboard"
    );
    app.stop().await;
}

on_both_backends!(the_api_reference_lists_every_operation_and_works_offline);

/// With the public checkout limit met, checkouts answer 429 as documented.
async fn rate_limited_checkouts_answer_as_documented(backend: Backend) {
    let (simulated, fixtures) = simulated_app_with(backend, |settings| {
        settings.security.checkout_per_target_per_minute = 3;
    })
    .await;
    let app = &simulated.app;
    let document: Value = app.get("/api/openapi.json").await.json().await.unwrap();
    let report = run(&Run {
        address: &app.address,
        client: &app.client,
        document: &document,
        fixtures: &fixtures,
        admin_token: ADMIN_TOKEN,
        auditor_token: ADMIN_TOKEN,
        cases: 20,
        seed: seed(),
        only: "POST /api/checkout/",
    })
    .await;
    assert!(report.failures.is_empty(), "{}", report.failures.join("\n"));
    assert!(
        report.statuses.contains_key(&429),
        "the limit was never met: {:?}",
        report.statuses
    );
    simulated.app.stop().await;
}

on_both_backends!(rate_limited_checkouts_answer_as_documented);

/// The answers no handler writes — the body limit's 413, an unknown route's 404, a wrong
/// method's 405 — have the one error shape under `/api/` too.
async fn answers_no_handler_writes_have_the_error_shape(backend: Backend) {
    let app = crate::helpers::spawn_app(backend).await;
    let document: Value = app.get("/api/openapi.json").await.json().await.unwrap();
    let error_body = json!({"$ref": "#/components/schemas/ErrorBody"});
    let limit = app.state.settings.security.limits.body_limit_bytes;
    let too_large = app
        .client
        .post(format!("{}/api/doors", app.address))
        .bearer_auth(ADMIN_TOKEN)
        .header(CONTENT_TYPE, "application/json")
        .body(vec![b' '; limit + 1])
        .send()
        .await
        .unwrap();
    let unknown = app.get("/api/no-such-route").await;
    let wrong_method = app
        .client
        .delete(format!("{}/api/doors", app.address))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    for (response, status, code) in [
        (too_large, 413, "too_large"),
        (unknown, 404, "not_found"),
        (wrong_method, 405, "method_not_allowed"),
    ] {
        assert_eq!(response.status(), status);
        assert!(response.headers()[CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("application/json"));
        let body: Value = response.json().await.unwrap();
        let errors = contract_check::check(&document, &error_body, &body);
        assert!(errors.is_empty(), "{body}: {errors:?}");
        assert_eq!(body["error"]["code"], code);
    }
    app.stop().await;
}

on_both_backends!(answers_no_handler_writes_have_the_error_shape);
