//! An SMTP sink: a small SMTP server on a free port that speaks real SMTP over TCP
//! (greeting, EHLO/HELO, MAIL, RCPT, DATA with dot-unstuffing, RSET, NOOP, QUIT), accepts
//! every message and keeps it, plus a web page listing what it received. The server under
//! test or the demo reaches it with `smtp://127.0.0.1:PORT`, exactly as it would a relay
//! on its LAN (no TLS, no AUTH).
//!
//! Two views of what arrived: [`SmtpSink::deliveries`], every message the wire carried, and
//! [`SmtpSink::mailbox`], those messages filed by `Message-ID` as a mailbox does (a second
//! delivery of the same message is not a second message). Tests can make the next
//! conversation stall at a chosen point ([`Stall`]) to put a crash exactly there.

use std::collections::{HashSet, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::{spawn_server, ServerHandle};

/// Messages kept at most; older ones are dropped first (the demo may run for days).
const MESSAGES_MAX: usize = 1_000;

/// One message as received: the envelope and the raw RFC 5322 text.
#[derive(Clone, Debug, Serialize)]
pub struct Received {
    pub from: String,
    pub to: Vec<String>,
    pub data: String,
}

impl Received {
    /// The message with quoted-printable soft line breaks joined and `=XX` escapes
    /// decoded, so a reader can search the text as the recipient reads it.
    pub fn text(&self) -> String {
        let joined = self.data.replace("=\r\n", "");
        let bytes = joined.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut index = 0;
        while index < bytes.len() {
            let hex = (bytes[index] == b'=')
                .then(|| joined.get(index + 1..index + 3))
                .flatten()
                .filter(|hex| {
                    hex.bytes()
                        .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
                })
                .and_then(|hex| u8::from_str_radix(hex, 16).ok());
            match hex {
                Some(byte) => {
                    out.push(byte);
                    index += 3;
                }
                None => {
                    out.push(bytes[index]);
                    index += 1;
                }
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    /// A header's raw value (the first line of it).
    pub fn header(&self, name: &str) -> Option<String> {
        let prefix = format!("{}:", name.to_ascii_lowercase());
        self.data
            .lines()
            .take_while(|line| !line.is_empty())
            .find(|line| line.to_ascii_lowercase().starts_with(&prefix))
            .map(|line| line[prefix.len()..].trim().to_string())
    }

    /// The `Message-ID`, as written.
    pub fn message_id(&self) -> Option<String> {
        self.header("Message-ID")
    }

    /// The subject as the recipient reads it (RFC 2047 `=?utf-8?b?…?=` words decoded).
    pub fn subject(&self) -> String {
        use base64::Engine;
        let raw = self.header("Subject").unwrap_or_default();
        raw.split(' ')
            .map(|word| {
                let decoded = word
                    .strip_prefix("=?utf-8?b?")
                    .and_then(|rest| rest.strip_suffix("?="))
                    .and_then(|encoded| {
                        base64::engine::general_purpose::STANDARD
                            .decode(encoded)
                            .ok()
                    })
                    .and_then(|bytes| String::from_utf8(bytes).ok());
                decoded.unwrap_or_else(|| word.to_string())
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Where the next conversation stops answering (and stays silent until the client hangs
/// up), so a test can crash the sender at that point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stall {
    /// Before the greeting: nothing was sent.
    AtGreeting,
    /// After the whole message and its final ".", before any answer: not accepted, and
    /// discarded when the client goes away (as a server does with an unanswered DATA).
    BeforeAccepting,
    /// The message is accepted and kept, but the "250" never leaves: the sender cannot
    /// know that the server has it.
    AfterAccepting,
}

#[derive(Default)]
struct Shared {
    deliveries: Mutex<VecDeque<Received>>,
    stalls: Mutex<VecDeque<Stall>>,
    /// Conversations that reached their stall point.
    stalled: AtomicUsize,
}

impl Shared {
    fn keep(&self, message: Received) {
        let mut deliveries = self.deliveries.lock().unwrap_or_else(|e| e.into_inner());
        if deliveries.len() == MESSAGES_MAX {
            deliveries.pop_front();
        }
        deliveries.push_back(message);
    }

    fn deliveries(&self) -> Vec<Received> {
        let deliveries = self.deliveries.lock().unwrap_or_else(|e| e.into_inner());
        deliveries.iter().cloned().collect()
    }

    fn mailbox(&self) -> Vec<Received> {
        let mut seen = HashSet::new();
        self.deliveries()
            .into_iter()
            .filter(|message| match message.message_id() {
                Some(id) => seen.insert(id),
                None => true,
            })
            .collect()
    }

    fn next_stall(&self) -> Option<Stall> {
        self.stalls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front()
    }
}

/// A running sink: the SMTP listener, and the web page once [`SmtpSink::serve_web`] ran.
pub struct SmtpSink {
    pub address: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
    web: Option<ServerHandle>,
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SmtpSink {
    /// A sink on a free port of 127.0.0.1.
    pub async fn start() -> io::Result<SmtpSink> {
        SmtpSink::spawn(TcpListener::bind("127.0.0.1:0").await?)
    }

    /// A sink on `listener`.
    pub fn spawn(listener: TcpListener) -> io::Result<SmtpSink> {
        let address = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let kept = shared.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(converse(stream, kept.clone()));
            }
        });
        Ok(SmtpSink {
            address,
            shared,
            task,
            web: None,
        })
    }

    /// Serves the page listing what arrived (`/`, and `/messages.json`) on `listener`.
    pub fn serve_web(&mut self, listener: TcpListener) -> io::Result<()> {
        self.web = Some(spawn_server(listener, router(self.shared.clone()))?);
        Ok(())
    }

    /// The page's address, once served.
    pub fn web_url(&self) -> Option<String> {
        self.web.as_ref().map(|web| web.base_url().to_string())
    }

    /// What `LATCHKEY_SMTP_URL` should say.
    pub fn url(&self) -> String {
        format!("smtp://{}", self.address)
    }

    /// Every message the wire carried, in order.
    pub fn deliveries(&self) -> Vec<Received> {
        self.shared.deliveries()
    }

    /// The messages as a mailbox files them: one per `Message-ID`.
    pub fn mailbox(&self) -> Vec<Received> {
        self.shared.mailbox()
    }

    /// Mailbox messages whose envelope names `recipient`.
    pub fn to(&self, recipient: &str) -> Vec<Received> {
        self.mailbox()
            .into_iter()
            .filter(|message| message.to.iter().any(|to| to == recipient))
            .collect()
    }

    /// Deliveries (every one the wire carried) whose envelope names `recipient`.
    pub fn deliveries_to(&self, recipient: &str) -> Vec<Received> {
        self.deliveries()
            .into_iter()
            .filter(|message| message.to.iter().any(|to| to == recipient))
            .collect()
    }

    /// The next conversation stops at `stall` (queued after any stall already asked for).
    pub fn stall_next(&self, stall: Stall) {
        self.shared
            .stalls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(stall);
    }

    /// How many conversations reached their stall point.
    pub fn stalled(&self) -> usize {
        self.shared.stalled.load(Ordering::SeqCst)
    }

    pub async fn shutdown(mut self) {
        self.task.abort();
        if let Some(web) = self.web.take() {
            web.shutdown().await;
        }
    }
}

/// The address inside `MAIL FROM:<…>` / `RCPT TO:<…>` (parameters after it ignored).
fn path(argument: &str) -> String {
    let start = argument.find('<').map_or(0, |index| index + 1);
    let end = argument[start..]
        .find('>')
        .map_or(argument.len(), |index| start + index);
    argument[start..end].to_string()
}

/// Waits, silent, until the client hangs up.
async fn until_hung_up(lines: &mut BufReader<OwnedReadHalf>) {
    let mut line = String::new();
    while matches!(lines.read_line(&mut line).await, Ok(n) if n > 0) {
        line.clear();
    }
}

/// Reads DATA up to the lone "."; `None` when the client hung up first.
async fn read_data(lines: &mut BufReader<OwnedReadHalf>) -> Option<String> {
    let mut data = String::new();
    loop {
        let mut line = String::new();
        match lines.read_line(&mut line).await {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
        if line == ".\r\n" || line == ".\n" {
            return Some(data);
        }
        // Dot-stuffing: a line the client began with "." carries one more.
        data.push_str(line.strip_prefix('.').unwrap_or(&line));
    }
}

async fn converse(stream: TcpStream, shared: Arc<Shared>) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    let stall = shared.next_stall();
    if stall == Some(Stall::AtGreeting) {
        shared.stalled.fetch_add(1, Ordering::SeqCst);
        until_hung_up(&mut lines).await;
        return;
    }
    let mut from = String::new();
    let mut to = Vec::new();
    if write.write_all(b"220 sink.test ESMTP\r\n").await.is_err() {
        return;
    }
    loop {
        let mut line = String::new();
        match lines.read_line(&mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let command = line.trim_end().to_string();
        let upper = command.to_ascii_uppercase();
        let reply: &[u8] = if upper.starts_with("EHLO") {
            b"250-sink.test\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n"
        } else if upper.starts_with("HELO") {
            b"250 sink.test\r\n"
        } else if upper.starts_with("MAIL FROM:") {
            from = path(&command[10..]);
            to.clear();
            b"250 OK\r\n"
        } else if upper.starts_with("RCPT TO:") {
            to.push(path(&command[8..]));
            b"250 OK\r\n"
        } else if upper == "DATA" {
            if write
                .write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                .await
                .is_err()
            {
                return;
            }
            let Some(data) = read_data(&mut lines).await else {
                return;
            };
            if stall == Some(Stall::BeforeAccepting) {
                shared.stalled.fetch_add(1, Ordering::SeqCst);
                until_hung_up(&mut lines).await;
                return;
            }
            shared.keep(Received {
                from: from.clone(),
                to: std::mem::take(&mut to),
                data,
            });
            if stall == Some(Stall::AfterAccepting) {
                shared.stalled.fetch_add(1, Ordering::SeqCst);
                until_hung_up(&mut lines).await;
                return;
            }
            b"250 OK queued\r\n"
        } else if upper == "RSET" {
            to.clear();
            b"250 OK\r\n"
        } else if upper == "NOOP" {
            b"250 OK\r\n"
        } else if upper == "QUIT" {
            let _ = write.write_all(b"221 Bye\r\n").await;
            return;
        } else {
            b"502 Command not implemented\r\n"
        };
        if write.write_all(reply).await.is_err() {
            return;
        }
    }
}

/// One message on the web page and in `/messages.json`.
#[derive(Serialize)]
struct Listed {
    from: String,
    to: Vec<String>,
    subject: String,
    message_id: Option<String>,
    date: Option<String>,
    text: String,
}

fn listed(shared: &Shared) -> Vec<Listed> {
    let mut messages: Vec<Listed> = shared
        .mailbox()
        .into_iter()
        .map(|message| Listed {
            subject: message.subject(),
            message_id: message.message_id(),
            date: message.header("Date"),
            text: message.text(),
            from: message.from,
            to: message.to,
        })
        .collect();
    messages.reverse();
    messages
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/messages.json", get(json))
        .with_state(shared)
}

async fn json(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    Json(listed(&shared))
}

async fn page(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let messages = listed(&shared);
    let markup = maud::html! {
        (maud::DOCTYPE)
        html lang="en" {
            head { meta charset="utf-8"; title { "Latchkey demo: mail sent" } }
            body {
                h1 { "Mail sent (" (messages.len()) ")" }
                p { "Every message the demo's server handed to its SMTP server, newest first. Reload to see new ones; JSON at " a href="/messages.json" { "/messages.json" } "." }
                @for message in &messages {
                    article {
                        h2 { (message.subject) }
                        p { "To " (message.to.join(", ")) " · " (message.date.as_deref().unwrap_or_default()) }
                        details { summary { "Source" } pre { (message.text) } }
                    }
                }
            }
        }
    };
    Html(markup.into_string())
}
