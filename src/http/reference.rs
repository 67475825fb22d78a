//! `GET /api/reference`: the API reference as one server-rendered page, made from the
//! served OpenAPI document itself (so it cannot drift from it): every operation with its
//! security, parameters, body and answers, then every schema with its fields, types and
//! bounds. No script and nothing from a CDN: it works offline and under the pages'
//! Content-Security-Policy.

use axum::extract::State;
use axum::response::Html;
use axum::routing::get;
use axum::Router;
use maud::{html, Markup};
use serde_json::Value;

use super::openapi::served_document;
use super::AppState;
use crate::ui::layout::{page, PageHead};

pub fn router() -> Router<AppState> {
    Router::new().route("/api/reference", get(reference))
}

const METHODS: &[&str] = &["get", "post", "put", "patch", "delete"];

async fn reference(State(state): State<AppState>) -> Html<String> {
    let branding = crate::ui::branding::current(&state).await;
    Html(
        page(
            PageHead::new("API reference", branding),
            render(served_document()),
        )
        .into_string(),
    )
}

/// The anchor of an operation, e.g. `post-api-doors-uid`.
pub fn anchor(method: &str, path: &str) -> String {
    let mut anchor = method.to_string();
    for part in path.split(|c: char| !c.is_ascii_alphanumeric()) {
        if !part.is_empty() {
            anchor.push('-');
            anchor.push_str(part);
        }
    }
    anchor
}

/// The whole page body for `document`.
pub fn render(document: &Value) -> Markup {
    let empty = serde_json::Map::new();
    let paths = document["paths"].as_object().unwrap_or(&empty);
    let schemas = document["components"]["schemas"]
        .as_object()
        .unwrap_or(&empty);
    html! {
        link rel="stylesheet" href="/static/shell.css";
        h1 { "API reference" }
        p { (document["info"]["description"].as_str().unwrap_or_default()) }
        p {
            "The machine-readable document is " a href="/api/openapi.json" { "/api/openapi.json" }
            " (OpenAPI " (document["openapi"].as_str().unwrap_or_default()) "). Routes marked "
            strong { "bearer" } " take " code { "Authorization: Bearer <API token>" }
            ". Every error answer is " code { "{\"error\": {\"code\", \"message\"}}" } " ("
            a href="#schema-ErrorBody" { "ErrorBody" } ")."
        }
        nav aria-label="Operations" {
            h2 { "Operations" }
            ul {
                @for (path, item) in paths {
                    @for method in METHODS.iter().filter(|m| item.get(**m).is_some()) {
                        li { a href={ "#" (anchor(method, path)) } { code { (method.to_uppercase()) " " (path) } } }
                    }
                }
            }
        }
        @for (path, item) in paths {
            @for method in METHODS.iter().filter(|m| item.get(**m).is_some()) {
                (operation(method, path, &item[*method]))
            }
        }
        h2 { "Schemas" }
        @for (name, schema) in schemas {
            section.operation id={ "schema-" (name) } {
                h3 { code { (name) } }
                (schema_block(schema))
            }
        }
    }
}

fn operation(method: &str, path: &str, spec: &Value) -> Markup {
    let secured = spec["security"]
        .as_array()
        .is_some_and(|all| !all.is_empty());
    let parameters = spec["parameters"].as_array().cloned().unwrap_or_default();
    html! {
        section.operation id=(anchor(method, path)) {
            h3 { code { (method.to_uppercase()) " " (path) } }
            @if let Some(summary) = spec["summary"].as_str() { p { (summary) } }
            @if let Some(description) = spec["description"].as_str() { p { (description) } }
            p { "Security: " @if secured { strong { "bearer" } } @else { "none (public)" } }
            @if !parameters.is_empty() {
                h4 { "Parameters" }
                table.data {
                    thead { tr { th { "name" } th { "in" } th { "required" } th { "type" } th { "description" } } }
                    tbody {
                        @for parameter in &parameters {
                            tr {
                                td { code { (parameter["name"].as_str().unwrap_or_default()) } }
                                td { (parameter["in"].as_str().unwrap_or_default()) }
                                td { @if parameter["required"].as_bool().unwrap_or(false) { "yes" } @else { "no" } }
                                td { (type_of(&parameter["schema"])) }
                                td { (parameter["description"].as_str().unwrap_or_default()) }
                            }
                        }
                    }
                }
            }
            @if let Some(content) = spec["requestBody"]["content"].as_object() {
                h4 { "Body" @if spec["requestBody"]["required"].as_bool() != Some(true) { " (optional)" } }
                @for (media_type, media) in content {
                    p { code { (media_type) } ": " (type_of(&media["schema"])) }
                }
            }
            h4 { "Answers" }
            table.data {
                thead { tr { th { "status" } th { "body" } th { "when" } } }
                tbody {
                    @if let Some(responses) = spec["responses"].as_object() {
                        @for (status, response) in responses {
                            tr {
                                td { (status) }
                                td {
                                    @if let Some(content) = response["content"].as_object() {
                                        @for (media_type, media) in content {
                                            code { (media_type) } " " (type_of(&media["schema"])) " "
                                        }
                                    } @else { "none" }
                                }
                                td { (response["description"].as_str().unwrap_or_default()) }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// A named schema: its fields (with types, bounds and whether required), or its type.
fn schema_block(schema: &Value) -> Markup {
    let required: Vec<&str> = schema["required"]
        .as_array()
        .map(|all| all.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    html! {
        @if let Some(description) = schema["description"].as_str() { p { (description) } }
        @if let Some(properties) = schema["properties"].as_object() {
            @if schema["additionalProperties"] == Value::Bool(false) {
                p { "Unknown fields are refused (422)." }
            }
            table.data {
                thead { tr { th { "field" } th { "required" } th { "type" } th { "description" } } }
                tbody {
                    @for (name, property) in properties {
                        tr {
                            td { code { (name) } }
                            td { @if required.contains(&name.as_str()) { "yes" } @else { "no" } }
                            td { (type_of(property)) }
                            td { (property["description"].as_str().unwrap_or_default()) }
                        }
                    }
                }
            }
        } @else {
            p { (type_of(schema)) }
        }
    }
}

/// A schema in a few words: `integer (int64), 1 to 10080`, `string (uuid)`, `one of: a,
/// b`, a link to a named schema, `array of …`.
fn type_of(schema: &Value) -> Markup {
    if let Some(reference) = schema["$ref"].as_str() {
        let name = reference.rsplit('/').next().unwrap_or(reference);
        return html! { a href={ "#schema-" (name) } { (name) } };
    }
    for keyword in ["oneOf", "anyOf", "allOf"] {
        if let Some(branches) = schema[keyword].as_array() {
            let joiner = if keyword == "allOf" { " and " } else { " or " };
            return html! {
                @for (index, branch) in branches.iter().enumerate() {
                    @if index > 0 { (joiner) }
                    (type_of(branch))
                }
            };
        }
    }
    let types = match &schema["type"] {
        Value::String(one) => one.clone(),
        Value::Array(many) => many
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(" or "),
        _ => "any".to_string(),
    };
    let mut notes = Vec::new();
    if let Some(format) = schema["format"].as_str() {
        notes.push(format.to_string());
    }
    if let Some(values) = schema["enum"].as_array() {
        let words: Vec<String> = values
            .iter()
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
            .collect();
        notes.push(format!("one of: {}", words.join(", ")));
    }
    for (keyword, word) in [
        ("minimum", "at least"),
        ("maximum", "at most"),
        ("exclusiveMinimum", "above"),
        ("minLength", "characters at least"),
        ("maxLength", "characters at most"),
        ("minItems", "items at least"),
        ("maxItems", "items at most"),
        ("pattern", "matching"),
    ] {
        if let Some(value) = schema.get(keyword) {
            let shown = value
                .as_str()
                .map_or_else(|| value.to_string(), str::to_string);
            notes.push(format!("{word} {shown}"));
        }
    }
    if let Some(default) = schema.get("default") {
        notes.push(format!("default {default}"));
    }
    html! {
        (types)
        @if !notes.is_empty() { " (" (notes.join("; ")) ")" }
        @if let Some(items) = schema.get("items") { " of " (type_of(items)) }
    }
}
