//! Helpers for the account tests: a cookie-keeping HTTP agent that logs in through the
//! real pages, users created and enrolled directly in the store, and TOTP codes computed
//! from their secrets.

use std::collections::HashMap;

use latchkey::accounts::{password, totp, users};
use latchkey::http::auth::Role;
use latchkey::store::Database;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use reqwest::StatusCode;

pub const PASSWORD: &str = "correct horse battery staple";

/// A user with a confirmed second factor.
pub struct TestUser {
    pub user_id: String,
    pub email: String,
    pub secret: String,
}

/// Creates an active user with `PASSWORD` and a confirmed TOTP secret whose last used
/// step lies in the past, so the current code is accepted.
pub async fn enrolled_user(database: &Database, email: &str, role: Role) -> TestUser {
    let hash = password::hash(PASSWORD).unwrap();
    let user = users::create(database, email, role, &hash, false)
        .await
        .unwrap();
    let secret = totp::new_secret();
    users::begin_totp(database, &user.user_id, &secret, None)
        .await
        .unwrap();
    let old_step = totp::step_at(chrono::Utc::now().timestamp()) - 5;
    users::confirm_totp(database, &user.user_id, old_step, &[])
        .await
        .unwrap();
    TestUser {
        user_id: user.user_id,
        email: user.email,
        secret,
    }
}

/// A code for `secret` that the server will accept now: the earliest step within the
/// ±1 window that is later than the last one used.
pub async fn fresh_code(database: &Database, user_id: &str, secret: &str) -> String {
    let user = users::by_id(database, user_id).await.unwrap().unwrap();
    let now = totp::step_at(chrono::Utc::now().timestamp());
    let step = match user.totp_last_step {
        Some(last) if last >= now - 1 => last + 1,
        _ => now - 1,
    };
    assert!(
        step <= now + 1,
        "every code of the window was used; wait a step"
    );
    totp::code_for_step(&totp::base32_decode(secret).unwrap(), step)
}

/// An HTTP client that keeps cookies, follows no redirects and reads CSRF tokens.
#[derive(Clone)]
pub struct Agent {
    pub address: String,
    pub client: reqwest::Client,
    pub cookies: HashMap<String, String>,
}

/// A response, read.
pub struct Page {
    pub status: StatusCode,
    pub location: Option<String>,
    pub body: String,
}

impl Page {
    /// The value of the first hidden `csrf_token` field.
    pub fn csrf(&self) -> String {
        let marker = r#"name="csrf_token" value=""#;
        let start = self
            .body
            .find(marker)
            .unwrap_or_else(|| panic!("no csrf_token in {}", self.body))
            + marker.len();
        let end = self.body[start..].find('"').unwrap() + start;
        self.body[start..end].to_string()
    }
}

impl Agent {
    pub fn new(address: &str) -> Agent {
        Agent {
            address: address.to_string(),
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookies: HashMap::new(),
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn read(&mut self, response: reqwest::Response) -> Page {
        for value in response.headers().get_all(SET_COOKIE) {
            let text = value.to_str().unwrap();
            let pair = text.split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            if value.is_empty() || text.contains("Max-Age=0") {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_string(), value.to_string());
            }
        }
        Page {
            status: response.status(),
            location: response
                .headers()
                .get(LOCATION)
                .map(|value| value.to_str().unwrap().to_string()),
            body: response.text().await.unwrap(),
        }
    }

    pub async fn get(&mut self, path: &str) -> Page {
        let response = self
            .client
            .get(format!("{}{path}", self.address))
            .header(COOKIE, self.cookie_header())
            .send()
            .await
            .unwrap();
        self.read(response).await
    }

    pub async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let response = self
            .client
            .post(format!("{}{path}", self.address))
            .header(COOKIE, self.cookie_header())
            .form(form)
            .send()
            .await
            .unwrap();
        self.read(response).await
    }

    /// A form POST with one extra header (e.g. what a proxy adds).
    pub async fn post_with_header(
        &mut self,
        path: &str,
        header: (&str, &str),
        form: &[(&str, &str)],
    ) -> Page {
        let response = self
            .client
            .post(format!("{}{path}", self.address))
            .header(COOKIE, self.cookie_header())
            .header(header.0, header.1)
            .form(form)
            .send()
            .await
            .unwrap();
        self.read(response).await
    }

    /// Email and password on /login; the answer to the POST.
    pub async fn submit_password(&mut self, email: &str, password: &str) -> Page {
        let token = self.get("/login").await.csrf();
        self.post(
            "/login",
            &[
                ("csrf_token", &token),
                ("email", email),
                ("password", password),
                ("next", "/account"),
            ],
        )
        .await
    }

    /// The code on /login/code; the answer to the POST.
    pub async fn submit_code(&mut self, code: &str) -> Page {
        let page = self.get("/login/code?next=/account").await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        let token = page.csrf();
        self.post(
            "/login/code",
            &[("csrf_token", &token), ("code", code), ("next", "/account")],
        )
        .await
    }

    /// Logs `user` in fully (password, then a fresh code).
    pub async fn log_in(&mut self, database: &Database, user: &TestUser) {
        let page = self.submit_password(&user.email, PASSWORD).await;
        assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
        let code = fresh_code(database, &user.user_id, &user.secret).await;
        let page = self.submit_code(&code).await;
        assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
        assert_eq!(page.location.as_deref(), Some("/account"));
    }

    pub fn session_cookie(&self) -> Option<String> {
        self.cookies.get("latchkey_session").cloned()
    }
}
