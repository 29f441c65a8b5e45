//! Self-registration (`POST /auth/register`, per `auth.registration`) and
//! sign-in sessions (`GET /sessions`, `POST /sessions/:id/terminate`) over
//! real HTTP: a terminated session's refresh token fails; one user cannot
//! end another's; an administrator sees every session.

mod common;

use common::*;
use serde_json::{Value, json};

const PASSWORD: &str = "Correct-Horse-42-battery";

struct Api {
    h: Harness,
    server: iris_server::Running,
    base: String,
    http: reqwest::Client,
    admin: String,
}

async fn api(registration: &str) -> Api {
    let h = start(&format!(
        "api:\n  port: 0\n  rateLimit:\n    login: 1000/min\nauth:\n  registration: {registration}\nteams:\n  demo:\n    path: .\n    agent: echo\n"
    ))
    .await;
    let (server, admin) = h.serve_with_key("admin").await;
    Api {
        base: format!("http://{}/api/v1", server.addr),
        h,
        server,
        http: reqwest::Client::new(),
        admin,
    }
}

impl Api {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        bearer: Option<&str>,
        body: Value,
    ) -> (u16, Value) {
        http(
            &self.http,
            method,
            format!("{}{path}", self.base),
            bearer,
            body,
        )
        .await
    }
    async fn post(&self, path: &str, bearer: Option<&str>, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, bearer, body).await
    }
    async fn get(&self, path: &str, bearer: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, Some(bearer), Value::Null)
            .await
    }
    async fn login(&self, username: &str) -> (String, String) {
        let (status, t) = self
            .post(
                "/auth/login",
                None,
                json!({"username": username, "password": PASSWORD}),
            )
            .await;
        assert_eq!(status, 200, "{t}");
        (
            t["accessToken"].as_str().unwrap().to_owned(),
            t["refreshToken"].as_str().unwrap().to_owned(),
        )
    }
    async fn stop(self) {
        self.server.stop().await;
        self.h.stop().await;
    }
}

#[tokio::test]
async fn registration_follows_the_configured_mode() {
    let closed = api("closed").await;
    let (status, body) = closed
        .post(
            "/auth/register",
            None,
            json!({"email": "ann@example.com", "password": PASSWORD}),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("FORBIDDEN")),
        "{body}"
    );
    closed.stop().await;

    let approval = api("approval").await;
    let (status, user) = approval
        .post(
            "/auth/register",
            None,
            json!({"email": "bob@example.com", "password": PASSWORD, "name": "Bob"}),
        )
        .await;
    assert_eq!(status, 201, "{user}");
    assert_eq!(
        (user["username"].as_str(), user["status"].as_str()),
        (Some("bob"), Some("disabled"))
    );
    let (status, _) = approval
        .post(
            "/auth/login",
            None,
            json!({"username": "bob", "password": PASSWORD}),
        )
        .await;
    assert_eq!(status, 401, "disabled until an administrator enables it");
    let admin = approval.admin.clone();
    let (status, _) = approval
        .call(
            reqwest::Method::PATCH,
            &format!("/admin/users/{}", user["id"].as_str().unwrap()),
            Some(&admin),
            json!({"status": "active"}),
        )
        .await;
    assert_eq!(status, 200);
    approval.login("bob").await;
    approval.stop().await;

    let open = api("open").await;
    let (status, user) = open
        .post(
            "/auth/register",
            None,
            json!({"email": "cy@example.com", "username": "cyd", "password": PASSWORD}),
        )
        .await;
    assert_eq!(
        (status, user["status"].as_str()),
        (201, Some("active")),
        "{user}"
    );
    open.login("cyd").await;
    // Bad input: a weak password, a taken name, no email.
    let (status, body) = open
        .post(
            "/auth/register",
            None,
            json!({"email": "dee@example.com", "password": "short"}),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("VALIDATION_ERROR")),
        "{body}"
    );
    let (status, _) = open
        .post(
            "/auth/register",
            None,
            json!({"email": "cy2@example.com", "username": "cyd", "password": PASSWORD}),
        )
        .await;
    assert_eq!(status, 409);
    let (status, _) = open
        .post("/auth/register", None, json!({"password": PASSWORD}))
        .await;
    assert_eq!(status, 400);
    open.stop().await;
}

#[tokio::test]
async fn a_terminated_sign_in_session_loses_its_refresh_and_access_tokens() {
    let a = api("open").await;
    for who in ["eve", "fay"] {
        let (status, _) = a
            .post(
                "/auth/register",
                None,
                json!({"email": format!("{who}@example.com"), "password": PASSWORD}),
            )
            .await;
        assert_eq!(status, 201);
    }
    let (eve_access, eve_refresh) = a.login("eve").await;
    let (_, eve_other_refresh) = a.login("eve").await;
    let (fay_access, _) = a.login("fay").await;
    let (status, mine) = a.get("/sessions", &eve_access).await;
    assert_eq!(status, 200, "{mine}");
    let sessions = mine["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 2, "{mine}");
    // The newest session first: the second login.
    let first = sessions[1]["id"].as_str().unwrap().to_owned();
    // fay cannot end eve's session; the administrator sees all three.
    let (status, _) = a
        .post(
            &format!("/sessions/{first}/terminate"),
            Some(&fay_access),
            json!({}),
        )
        .await;
    assert_eq!(status, 404);
    let admin = a.admin.clone();
    let (_, all) = a.get("/sessions", &admin).await;
    assert_eq!(all["sessions"].as_array().unwrap().len(), 3, "{all}");
    let (status, done) = a
        .post(
            &format!("/sessions/{first}/terminate"),
            Some(&eve_access),
            json!({}),
        )
        .await;
    assert_eq!(
        (status, done["sessionId"].as_str()),
        (200, Some(first.as_str())),
        "{done}"
    );
    let (status, _) = a
        .post("/auth/refresh", None, json!({"refreshToken": eve_refresh}))
        .await;
    assert_eq!(status, 401, "the terminated session's refresh token fails");
    let (status, _) = a
        .post(
            "/auth/refresh",
            None,
            json!({"refreshToken": eve_other_refresh}),
        )
        .await;
    assert_eq!(status, 200, "the other session goes on");
    // Its access tokens end with it (not at their own expiry).
    let (status, _) = a.get("/sessions", &eve_access).await;
    assert_eq!(status, 401, "the terminated session's access token fails");
    let (other_access, _) = a.login("eve").await;
    let (status, mine) = a.get("/sessions", &other_access).await;
    assert_eq!(status, 200, "{mine}");
    assert_eq!(mine["sessions"].as_array().unwrap().len(), 2, "{mine}");
    a.stop().await;
}
