//! Prometheus metrics, rendered in the text exposition format at `GET /metrics`.
//!
//! A small registry of our own rather than a global recorder: each `Application` owns
//! one, so several instances in one test process never mix their numbers.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

/// Help text and type of every metric we export; a metric not listed here is still
/// exported, without HELP.
const DESCRIPTIONS: &[(&str, &str, &str)] = &[
    (
        "latchkey_http_requests_total",
        "counter",
        "HTTP requests served, by route and status.",
    ),
    (
        "latchkey_subscription_position",
        "gauge",
        "Last journal position handled by each subscriber.",
    ),
    (
        "latchkey_subscription_failures_total",
        "counter",
        "Subscriber batches that failed and were retried.",
    ),
    (
        "latchkey_journal_events",
        "gauge",
        "Events in the journal when last measured.",
    ),
    (
        "latchkey_projection_lag_events",
        "gauge",
        "Committed journal events each projection has not handled yet.",
    ),
    (
        "latchkey_projection_position",
        "gauge",
        "Last journal position each projection has handled.",
    ),
    (
        "latchkey_singleton_held",
        "gauge",
        "1 while this instance holds the singleton's lease and runs it, else 0.",
    ),
    (
        "latchkey_singleton_epoch",
        "gauge",
        "The epoch of the singleton's lease this instance last took.",
    ),
    (
        "latchkey_singleton_lost_total",
        "counter",
        "Singleton leases this instance lost while running (its work was stopped).",
    ),
    (
        "latchkey_up",
        "gauge",
        "1 while the process serves requests.",
    ),
];

type Labels = Vec<(String, String)>;

#[derive(Debug, Default)]
pub struct Metrics {
    values: Mutex<BTreeMap<String, BTreeMap<Labels, f64>>>,
}

impl Metrics {
    pub fn increment(&self, name: &str, labels: &[(&str, &str)]) {
        self.add(name, labels, 1.0);
    }

    pub fn add(&self, name: &str, labels: &[(&str, &str)], amount: f64) {
        self.update(name, labels, |value| *value += amount);
    }

    pub fn set_gauge(&self, name: &str, labels: &[(&str, &str)], amount: f64) {
        self.update(name, labels, |value| *value = amount);
    }

    /// The current value of one series, if it exists.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let values = self
            .values
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        values.get(name)?.get(&owned(labels)).copied()
    }

    fn update(&self, name: &str, labels: &[(&str, &str)], change: impl FnOnce(&mut f64)) {
        // A panic while holding the lock cannot leave a half-written f64 behind, so a
        // poisoned lock is safe to keep using.
        let mut values = self
            .values
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let series = values.entry(name.to_string()).or_default();
        change(series.entry(owned(labels)).or_insert(0.0));
    }

    /// The Prometheus text exposition of every series.
    pub fn render(&self) -> String {
        let values = self
            .values
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut out = String::new();
        for (name, series) in values.iter() {
            if let Some((_, kind, help)) = DESCRIPTIONS.iter().find(|(n, _, _)| n == name) {
                let _ = writeln!(out, "# HELP {name} {help}");
                let _ = writeln!(out, "# TYPE {name} {kind}");
            }
            for (labels, value) in series {
                let _ = writeln!(out, "{name}{} {value}", render_labels(labels));
            }
        }
        out
    }
}

fn owned(labels: &[(&str, &str)]) -> Labels {
    labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn render_labels(labels: &Labels) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = labels
        .iter()
        .map(|(key, value)| {
            let escaped = value
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            format!("{key}=\"{escaped}\"")
        })
        .collect();
    format!("{{{}}}", parts.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_gauges_render_in_the_text_format() {
        let metrics = Metrics::default();
        metrics.increment(
            "latchkey_http_requests_total",
            &[("route", "/health"), ("status", "200")],
        );
        metrics.increment(
            "latchkey_http_requests_total",
            &[("route", "/health"), ("status", "200")],
        );
        metrics.set_gauge("latchkey_up", &[], 1.0);
        let text = metrics.render();
        assert!(text.contains("# TYPE latchkey_http_requests_total counter"));
        assert!(text.contains("latchkey_http_requests_total{route=\"/health\",status=\"200\"} 2"));
        assert!(text.contains("latchkey_up 1"));
    }

    #[test]
    fn label_values_are_escaped() {
        let metrics = Metrics::default();
        metrics.increment("x", &[("path", "a\"b")]);
        assert!(metrics.render().contains("x{path=\"a\\\"b\"} 1"));
    }
}
