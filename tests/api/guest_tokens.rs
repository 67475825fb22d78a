//! Guessing tokens gets nowhere: 10,000 random tokens all answer the same 404, and the time
//! of an answer says nothing about how close a guess was.

use std::time::{Duration, Instant};

use futures::StreamExt;
use latchkey::demo::DEMO_DOOR_UID;
use latchkey::payments::tokens;
use serde_json::{json, Value};

use crate::guest_pages::Guest;
use crate::helpers::Backend;
use crate::on_both_backends;

const GUESSES: usize = 10_000;
const TIMING_ROUNDS: usize = 300;

async fn random_tokens_find_nothing_and_answer_alike(backend: Backend) {
    let guest = Guest::start(backend).await;
    let real = real_token(&guest).await;
    assert_eq!(
        guest.get(&format!("/api/access/{real}")).await.status(),
        200
    );

    let started = Instant::now();
    let answers: Vec<(u16, usize)> = futures::stream::iter(0..GUESSES)
        .map(|_| {
            let guest = &guest;
            async move {
                let response = guest.get(&format!("/access/{}", tokens::generate())).await;
                let status = response.status().as_u16();
                (status, response.bytes().await.unwrap().len())
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let elapsed = started.elapsed();
    assert!(
        answers.iter().all(|(status, _)| *status == 404),
        "a random token was found"
    );
    let sizes: std::collections::BTreeSet<usize> = answers.iter().map(|(_, size)| *size).collect();
    assert_eq!(sizes.len(), 1, "404 bodies differ in size: {sizes:?}");

    // Interleaved, so drift in machine load hits every kind alike.
    let mut unknown = Vec::new();
    let mut near_miss = Vec::new();
    let mut malformed = Vec::new();
    let near = {
        let mut token = real.clone();
        let last = if token.ends_with('A') { "B" } else { "A" };
        token.replace_range(token.len() - 1.., last);
        token
    };
    for _ in 0..TIMING_ROUNDS {
        unknown.push(timed(&guest, &format!("/access/{}", tokens::generate()), 404).await);
        near_miss.push(timed(&guest, &format!("/access/{near}"), 404).await);
        malformed.push(
            timed(
                &guest,
                &format!("/access/{}", &tokens::generate()[..42]),
                404,
            )
            .await,
        );
    }
    let (unknown, near_miss, malformed) = (median(unknown), median(near_miss), median(malformed));
    println!(
        "{GUESSES} random tokens in {elapsed:?}; medians over {TIMING_ROUNDS}: unknown {unknown:?}, \
         one character off a real token {near_miss:?}, malformed {malformed:?}"
    );
    for (name, other) in [("near miss", near_miss), ("malformed", malformed)] {
        let (low, high) = if other < unknown {
            (other, unknown)
        } else {
            (unknown, other)
        };
        assert!(
            high < low * 2 || high - low < Duration::from_millis(2),
            "{name} answers take {other:?}, unknown tokens {unknown:?}"
        );
    }
    guest.demo.stop().await.unwrap();
}

async fn real_token(guest: &Guest) -> String {
    let response = guest
        .client
        .post(format!(
            "{}/api/checkout/door/{DEMO_DOOR_UID}",
            guest.demo.url
        ))
        .json(&json!({"email": "guest@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    let status_url = body["status_url"].as_str().unwrap();
    status_url.rsplit('/').next().unwrap().to_string()
}

async fn timed(guest: &Guest, path: &str, expected: u16) -> Duration {
    let started = Instant::now();
    let response = guest.get(path).await;
    let status = response.status().as_u16();
    let _ = response.bytes().await;
    let elapsed = started.elapsed();
    assert_eq!(status, expected, "{path}");
    elapsed
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

on_both_backends!(random_tokens_find_nothing_and_answer_alike);
