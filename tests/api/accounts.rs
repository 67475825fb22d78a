//! Accounts over HTTP (issue 9): login with password then code, rate limits, sessions
//! (logout everywhere, idle timeout, absolute lifetime), CSRF, deactivation, user API
//! tokens with roles, first login with a one-time password, the session cookie on the
//! JSON API, and `latchkey user create`.

use std::time::Duration;

use latchkey::accounts::{password, tokens, totp, users};
use latchkey::http::auth::Role;
use latchkey::startup::BuildOptions;
use reqwest::StatusCode;

use crate::accounts_support::{enrolled_user, fresh_code, Agent, PASSWORD};
use crate::helpers::{spawn_app, spawn_app_with_settings, Backend, TestApp, TestDatabase};
use crate::on_both_backends;

async fn app_with(
    backend: Backend,
    adjust: impl FnOnce(&mut latchkey::config::Settings),
) -> TestApp {
    spawn_app_with_settings(
        TestDatabase::create(backend).await,
        BuildOptions::default(),
        adjust,
    )
    .await
}

on_both_backends!(
    login_needs_the_password_then_the_code_and_a_wrong_code_is_refused,
    ten_wrong_passwords_are_rate_limited_and_the_right_one_still_needs_the_code,
    a_stolen_session_cookie_stops_working_after_logout_everywhere,
    form_posts_without_the_csrf_token_are_refused,
    a_deactivated_user_cannot_log_in_and_their_api_token_gets_401,
    an_auditors_token_reads_but_gets_403_from_refund,
    sessions_end_after_the_idle_timeout,
    sessions_end_after_their_absolute_lifetime,
    first_login_with_a_one_time_password_forces_a_new_password_and_enrolment,
    the_json_api_accepts_the_session_cookie_and_wants_the_csrf_header_for_writes,
    latchkey_user_create_bootstraps_an_admin,
    an_admin_changes_roles_resets_two_factor_and_passwords_but_keeps_one_admin,
);

async fn login_needs_the_password_then_the_code_and_a_wrong_code_is_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = enrolled_user(&app.database, "ann@example.com", Role::Admin).await;
    let mut agent = Agent::new(&app.address);

    // Not logged in: operator pages send to the login page, remembering where to return.
    let page = agent.get("/account").await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.location.as_deref(), Some("/login?next=%2Faccount"));

    let wrong = agent.submit_password(&user.email, "not the password").await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(
        wrong.body.contains("email or password is not right"),
        "{}",
        wrong.body
    );

    let page = agent.submit_password(&user.email, PASSWORD).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert!(page.location.unwrap().starts_with("/login/code"));
    // The password alone opens nothing.
    let page = agent.get("/account").await;
    assert_eq!(page.location.as_deref(), Some("/login/code"));
    let half_cookie = agent.session_cookie().unwrap();

    let refused = agent.submit_code("000000").await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert!(
        refused.body.contains("That code is not right"),
        "{}",
        refused.body
    );

    let code = fresh_code(&app.database, &user.user_id, &user.secret).await;
    let page = agent.submit_code(&code).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    assert_eq!(page.location.as_deref(), Some("/account"));
    assert_ne!(
        agent.session_cookie().unwrap(),
        half_cookie,
        "a fresh session id after login"
    );
    let account = agent.get("/account").await;
    assert_eq!(account.status, StatusCode::OK);
    assert!(account.body.contains("ann@example.com"));

    // The same code does not work twice.
    let mut other = Agent::new(&app.address);
    other.submit_password(&user.email, PASSWORD).await;
    let replay = other.submit_code(&code).await;
    assert_eq!(replay.status, StatusCode::UNAUTHORIZED);
    app.stop().await;
}

async fn ten_wrong_passwords_are_rate_limited_and_the_right_one_still_needs_the_code(
    backend: Backend,
) {
    let app = app_with(backend, |settings| {
        settings.accounts.failure_window = Duration::from_secs(4);
    })
    .await;
    let user = enrolled_user(&app.database, "bob@example.com", Role::Operator).await;
    let mut agent = Agent::new(&app.address);
    for attempt in 1..=10 {
        let page = agent
            .submit_password(&user.email, &format!("wrong password {attempt}"))
            .await;
        assert_eq!(page.status, StatusCode::UNAUTHORIZED, "attempt {attempt}");
    }
    // The right password is refused too while the limit holds, with a clear message.
    let limited = agent.submit_password(&user.email, PASSWORD).await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(
        limited.body.contains("Too many failed login attempts"),
        "{}",
        limited.body
    );
    assert!(
        limited.body.contains("try again in 1 minute"),
        "{}",
        limited.body
    );
    // The session cookie was never set.
    assert!(agent.session_cookie().is_none());

    tokio::time::sleep(Duration::from_millis(4200)).await;
    let page = agent.submit_password(&user.email, PASSWORD).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    assert!(
        page.location.unwrap().starts_with("/login/code"),
        "still the code step"
    );
    assert_eq!(
        agent.get("/account").await.location.as_deref(),
        Some("/login/code")
    );
    app.stop().await;
}

async fn a_stolen_session_cookie_stops_working_after_logout_everywhere(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = enrolled_user(&app.database, "cat@example.com", Role::Operator).await;
    let mut laptop = Agent::new(&app.address);
    laptop.log_in(&app.database, &user).await;
    let mut phone = Agent::new(&app.address);
    phone.log_in(&app.database, &user).await;

    let mut thief = Agent::new(&app.address);
    thief
        .cookies
        .insert("latchkey_session".into(), laptop.session_cookie().unwrap());
    assert_eq!(thief.get("/account").await.status, StatusCode::OK);
    let api = thief_api(&app, &thief).await;
    assert_eq!(api, StatusCode::OK);

    let token = phone.get("/account").await.csrf();
    let page = phone
        .post("/account/logout-everywhere", &[("csrf_token", &token)])
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);

    let stolen = thief.get("/account").await;
    assert_eq!(stolen.status, StatusCode::SEE_OTHER);
    assert!(stolen.location.unwrap().starts_with("/login"));
    assert_eq!(thief_api(&app, &thief).await, StatusCode::UNAUTHORIZED);
    assert_eq!(laptop.get("/account").await.status, StatusCode::SEE_OTHER);
    app.stop().await;
}

async fn thief_api(app: &TestApp, agent: &Agent) -> StatusCode {
    app.client
        .get(format!("{}/api/payments", app.address))
        .header(
            "cookie",
            format!(
                "latchkey_session={}",
                agent.session_cookie().unwrap_or_default()
            ),
        )
        .send()
        .await
        .unwrap()
        .status()
}

async fn form_posts_without_the_csrf_token_are_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = enrolled_user(&app.database, "dan@example.com", Role::Admin).await;
    let mut agent = Agent::new(&app.address);
    agent.log_in(&app.database, &user).await;

    let missing = agent.post("/account/tokens", &[("label", "script")]).await;
    assert_eq!(missing.status, StatusCode::FORBIDDEN);
    assert!(missing.body.contains("reload the page"), "{}", missing.body);
    let wrong = agent
        .post(
            "/account/tokens",
            &[("label", "script"), ("csrf_token", "guess")],
        )
        .await;
    assert_eq!(wrong.status, StatusCode::FORBIDDEN);
    let missing = agent
        .post("/users", &[("email", "x@example.com"), ("role", "admin")])
        .await;
    assert_eq!(missing.status, StatusCode::FORBIDDEN);
    assert!(users::by_email(&app.database, "x@example.com")
        .await
        .unwrap()
        .is_none());
    let missing = agent.post("/logout", &[]).await;
    assert_eq!(missing.status, StatusCode::FORBIDDEN);
    // The login form has its own token (a cookie and a field that must match).
    let mut stranger = Agent::new(&app.address);
    let login = stranger
        .post(
            "/login",
            &[("email", "dan@example.com"), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(login.status, StatusCode::FORBIDDEN);

    let token = agent.get("/account").await.csrf();
    let created = agent
        .post(
            "/account/tokens",
            &[("label", "script"), ("csrf_token", &token)],
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert!(created.body.contains("it is not shown again"));
    app.stop().await;
}

async fn a_deactivated_user_cannot_log_in_and_their_api_token_gets_401(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = enrolled_user(&app.database, "admin@example.com", Role::Admin).await;
    let operator = enrolled_user(&app.database, "op@example.com", Role::Operator).await;
    let user = users::by_id(&app.database, &operator.user_id)
        .await
        .unwrap()
        .unwrap();
    let token = tokens::create_for_user(&app.database, &user, "laptop")
        .await
        .unwrap();
    let api = |token: String| {
        let app_client = app.client.clone();
        let url = format!("{}/api/payments", app.address);
        async move {
            app_client
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(api(token.clone()).await, StatusCode::OK);
    let mut operator_agent = Agent::new(&app.address);
    operator_agent.log_in(&app.database, &operator).await;

    let mut admin_agent = Agent::new(&app.address);
    admin_agent.log_in(&app.database, &admin).await;
    let users_page = admin_agent.get("/users").await;
    assert_eq!(users_page.status, StatusCode::OK);
    let csrf = users_page.csrf();
    let page = admin_agent
        .post(
            &format!("/users/{}/deactivate", operator.user_id),
            &[("csrf_token", &csrf)],
        )
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);

    assert_eq!(api(token).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        operator_agent.get("/account").await.status,
        StatusCode::SEE_OTHER
    );
    let mut again = Agent::new(&app.address);
    let refused = again.submit_password(&operator.email, PASSWORD).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert!(refused.body.contains("deactivated"), "{}", refused.body);
    assert!(again.session_cookie().is_none());
    app.stop().await;
}

async fn an_auditors_token_reads_but_gets_403_from_refund(backend: Backend) {
    let app = spawn_app(backend).await;
    let auditor = enrolled_user(&app.database, "audit@example.com", Role::Auditor).await;
    let user = users::by_id(&app.database, &auditor.user_id)
        .await
        .unwrap()
        .unwrap();
    let token = tokens::create_for_user(&app.database, &user, "audit")
        .await
        .unwrap();
    let read = app
        .client
        .get(format!("{}/api/payments", app.address))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), StatusCode::OK);
    let refund = app
        .post_json(
            &format!("/api/payments/{}/refund", uuid::Uuid::new_v4()),
            Some(&token),
            &serde_json::json!({}),
        )
        .await;
    assert_eq!(refund.status(), StatusCode::FORBIDDEN);
    let body: serde_json::Value = refund.json().await.unwrap();
    assert_eq!(body["error"]["code"], "forbidden");
    // A role change applies to existing tokens at once.
    users::set_role(&app.database, &auditor.user_id, Role::Admin)
        .await
        .unwrap();
    let refund = app
        .post_json(
            &format!("/api/payments/{}/refund", uuid::Uuid::new_v4()),
            Some(&token),
            &serde_json::json!({}),
        )
        .await;
    assert_ne!(refund.status(), StatusCode::FORBIDDEN);
    // The bootstrap token keeps working beside user tokens.
    let bootstrap = app
        .client
        .get(format!("{}/api/payments", app.address))
        .bearer_auth(crate::helpers::ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(bootstrap.status(), StatusCode::OK);
    app.stop().await;
}

async fn sessions_end_after_the_idle_timeout(backend: Backend) {
    let app = app_with(backend, |settings| {
        settings.accounts.session_idle = Duration::from_millis(1500);
    })
    .await;
    let user = enrolled_user(&app.database, "eve@example.com", Role::Auditor).await;
    let mut agent = Agent::new(&app.address);
    agent.log_in(&app.database, &user).await;
    // Use keeps it alive past one idle period.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(agent.get("/account").await.status, StatusCode::OK);
    }
    tokio::time::sleep(Duration::from_millis(1700)).await;
    let page = agent.get("/account").await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert!(page.location.unwrap().starts_with("/login"));
    app.stop().await;
}

async fn sessions_end_after_their_absolute_lifetime(backend: Backend) {
    let app = app_with(backend, |settings| {
        settings.accounts.session_idle = Duration::from_secs(60);
        settings.accounts.session_lifetime = Duration::from_secs(3);
    })
    .await;
    let user = enrolled_user(&app.database, "fay@example.com", Role::Auditor).await;
    let mut agent = Agent::new(&app.address);
    agent.log_in(&app.database, &user).await;
    assert_eq!(agent.get("/account").await.status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(3200)).await;
    let page = agent.get("/account").await;
    assert_eq!(
        page.status,
        StatusCode::SEE_OTHER,
        "active use does not extend the lifetime"
    );
    app.stop().await;
}

async fn first_login_with_a_one_time_password_forces_a_new_password_and_enrolment(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    let one_time = password::one_time();
    let hash = password::hash(&one_time).unwrap();
    users::create(
        &app.database,
        "new@example.com",
        Role::Operator,
        &hash,
        true,
    )
    .await
    .unwrap();
    let mut agent = Agent::new(&app.address);
    let page = agent.submit_password("new@example.com", &one_time).await;
    assert_eq!(page.location.as_deref(), Some("/account/password"));
    // Nothing else opens before the password is changed and 2FA is on.
    assert_eq!(
        agent.get("/dashboard").await.location.as_deref(),
        Some("/account/password")
    );
    assert_eq!(
        agent.get("/api/payments").await.status,
        StatusCode::UNAUTHORIZED
    );

    let form = agent.get("/account/password").await;
    let csrf = form.csrf();
    let short = agent
        .post(
            "/account/password",
            &[
                ("csrf_token", &csrf),
                ("new_password", "short"),
                ("confirm", "short"),
            ],
        )
        .await;
    assert_eq!(short.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(short.body.contains("at least 12 characters"));
    let new_password = "a much better passphrase";
    let page = agent
        .post(
            "/account/password",
            &[
                ("csrf_token", &csrf),
                ("new_password", new_password),
                ("confirm", new_password),
            ],
        )
        .await;
    assert_eq!(page.location.as_deref(), Some("/account/2fa"));
    assert_eq!(
        agent.get("/dashboard").await.location.as_deref(),
        Some("/account/2fa")
    );

    let enrol = agent.get("/account/2fa").await;
    assert!(enrol.body.contains("<svg"), "a QR code");
    let marker = "data-secret=\"";
    let start = enrol.body.find(marker).unwrap() + marker.len();
    let secret = enrol.body[start..start + 32].to_string();
    let wrong = agent
        .post("/account/2fa", &[("csrf_token", &csrf), ("code", "123456")])
        .await;
    assert_eq!(wrong.status, StatusCode::UNPROCESSABLE_ENTITY);
    let now = totp::step_at(chrono::Utc::now().timestamp());
    let code = totp::code_for_step(&totp::base32_decode(&secret).unwrap(), now);
    let done = agent
        .post("/account/2fa", &[("csrf_token", &csrf), ("code", &code)])
        .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert!(done.body.contains("not shown again"));
    let codes: Vec<String> = done
        .body
        .split("<li><code>")
        .skip(1)
        .map(|rest| rest.split('<').next().unwrap().to_string())
        .collect();
    assert_eq!(codes.len(), 10, "{}", done.body);
    assert_eq!(agent.get("/dashboard").await.status, StatusCode::OK);

    // A backup code stands in for the app's code, once.
    let mut later = Agent::new(&app.address);
    later.submit_password("new@example.com", new_password).await;
    let page = later.submit_code(&codes[3].to_uppercase()).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    let mut again = Agent::new(&app.address);
    again.submit_password("new@example.com", new_password).await;
    assert_eq!(
        again.submit_code(&codes[3]).await.status,
        StatusCode::UNAUTHORIZED
    );
    app.stop().await;
}

async fn the_json_api_accepts_the_session_cookie_and_wants_the_csrf_header_for_writes(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    let user = enrolled_user(&app.database, "gus@example.com", Role::Admin).await;
    let mut agent = Agent::new(&app.address);
    agent.log_in(&app.database, &user).await;
    let cookie = format!("latchkey_session={}", agent.session_cookie().unwrap());
    let read = app
        .client
        .get(format!("{}/api/payments", app.address))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), StatusCode::OK);
    let door = serde_json::json!({"uid": "4242", "name": "Front", "location": "Main", "time_zone": "Europe/Paris", "price": 500, "currency": "eur", "access_minutes": 60});
    let without = app
        .client
        .post(format!("{}/api/doors", app.address))
        .header("cookie", &cookie)
        .json(&door)
        .send()
        .await
        .unwrap();
    assert_eq!(without.status(), StatusCode::FORBIDDEN);
    let body: serde_json::Value = without.json().await.unwrap();
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("X-CSRF-Token"));
    let csrf = agent.get("/account").await.csrf();
    let with = app
        .client
        .post(format!("{}/api/doors", app.address))
        .header("cookie", &cookie)
        .header("x-csrf-token", csrf)
        .json(&door)
        .send()
        .await
        .unwrap();
    assert_eq!(
        with.status(),
        StatusCode::CREATED,
        "{:?}",
        with.text().await
    );
    app.stop().await;
}

async fn latchkey_user_create_bootstraps_an_admin(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let run = |args: &[&str], stdin: Option<&str>| {
        use std::io::Write;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_latchkey"))
            .args(args)
            .env("DATABASE_URL", database.url.as_str())
            .env_remove("LATCHKEY_API_TOKEN")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        if let Some(input) = stdin {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
        }
        drop(child.stdin.take());
        child.wait_with_output().unwrap()
    };
    let output = run(
        &[
            "user",
            "create",
            "--email",
            "Root@Example.com",
            "--role",
            "admin",
        ],
        None,
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // The password is a line of its own (log lines may share stdout).
    let stdout = String::from_utf8(output.stdout).unwrap();
    let one_time = stdout
        .lines()
        .find(|line| line.len() == 20 && !line.contains(' '))
        .unwrap_or_else(|| panic!("no one-time password in {stdout}"))
        .to_string();
    let output = run(
        &[
            "user",
            "create",
            "--email",
            "typed@example.com",
            "--role",
            "auditor",
            "--password-stdin",
        ],
        Some("my own long passphrase\n"),
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let again = run(
        &[
            "user",
            "create",
            "--email",
            "root@example.com",
            "--role",
            "admin",
        ],
        None,
    );
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    let bad_role = run(
        &[
            "user",
            "create",
            "--email",
            "z@example.com",
            "--role",
            "boss",
        ],
        None,
    );
    assert!(!bad_role.status.success());

    let db = database.connect().await;
    let root = users::by_email(&db, "root@example.com")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(root.role, Role::Admin);
    assert!(root.must_change_password);
    assert!(password::verify(&one_time, &root.password_hash));
    let typed = users::by_email(&db, "typed@example.com")
        .await
        .unwrap()
        .unwrap();
    assert!(!typed.must_change_password);
    assert!(password::verify(
        "my own long passphrase",
        &typed.password_hash
    ));
    let list = run(&["user", "list"], None);
    assert!(String::from_utf8_lossy(&list.stdout).contains("root@example.com"));
    db.close().await;
}

async fn an_admin_changes_roles_resets_two_factor_and_passwords_but_keeps_one_admin(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    let admin = enrolled_user(&app.database, "boss@example.com", Role::Admin).await;
    let operator = enrolled_user(&app.database, "op@example.com", Role::Operator).await;
    let mut agent = Agent::new(&app.address);
    agent.log_in(&app.database, &admin).await;
    let csrf = agent.get("/users").await.csrf();
    let user = |id: String| {
        let database = app.database.clone();
        async move { users::by_id(&database, &id).await.unwrap().unwrap() }
    };

    let unknown_role = agent
        .post(
            &format!("/users/{}/role", operator.user_id),
            &[("csrf_token", &csrf), ("role", "owner")],
        )
        .await;
    assert_eq!(unknown_role.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(unknown_role
        .body
        .contains("Choose admin, operator or auditor"));
    let to_auditor = agent
        .post(
            &format!("/users/{}/role", operator.user_id),
            &[("csrf_token", &csrf), ("role", "auditor")],
        )
        .await;
    assert_eq!(to_auditor.location.as_deref(), Some("/users?done=role"));
    assert_eq!(user(operator.user_id.clone()).await.role, Role::Auditor);

    let reset_2fa = agent
        .post(
            &format!("/users/{}/reset-2fa", operator.user_id),
            &[("csrf_token", &csrf)],
        )
        .await;
    assert_eq!(reset_2fa.location.as_deref(), Some("/users?done=2fa"));
    assert!(!user(operator.user_id.clone()).await.totp_confirmed);

    let reset_password = agent
        .post(
            &format!("/users/{}/reset-password", operator.user_id),
            &[("csrf_token", &csrf)],
        )
        .await;
    assert_eq!(reset_password.status, StatusCode::OK);
    let reset = user(operator.user_id.clone()).await;
    assert!(reset.must_change_password);
    assert!(!password::verify(PASSWORD, &reset.password_hash));

    // An admin cannot demote or deactivate themselves, so an admin always remains.
    for (path, form) in [
        (
            "role",
            vec![("csrf_token", csrf.as_str()), ("role", "operator")],
        ),
        ("deactivate", vec![("csrf_token", csrf.as_str())]),
    ] {
        let refused = agent
            .post(&format!("/users/{}/{path}", admin.user_id), &form)
            .await;
        assert_eq!(refused.status, StatusCode::CONFLICT, "{path}");
        assert!(
            refused.body.contains("another admin changes your role"),
            "{path}"
        );
    }
    assert_eq!(user(admin.user_id.clone()).await.role, Role::Admin);
    app.stop().await;
}
