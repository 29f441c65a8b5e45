//! `/auth/*` (seed 003): login, refresh, logout, the caller, and TOTP MFA.
//! Thin adapters over the core's accounts service; the rules live there.

use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::routing::{get, post};
use axum::{Json, Router};

use iris_core::IrisError;
use iris_core::auth::Login;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::gate::caller::{self as auth, Caller, REFRESH_PREFIX};
use crate::params::Typed;
use crate::state::AppState;

/// The request bodies of the routes that take one, by the path under
/// `auth/`, as JSON Schemas from the types that read them, with what the
/// handlers require besides (one of the names at login; the token or
/// password a step needs).
pub fn request_schemas() -> Vec<(&'static str, Value)> {
    let schema = |s: schemars::Schema, required: &[&str]| {
        let mut v = s.to_value();
        if let Some(o) = v.as_object_mut() {
            o.remove("$schema");
            o.remove("title");
            if !required.is_empty() {
                o.insert("required".into(), json!(required));
            }
        }
        // A field a step needs is a non-empty string (not null).
        for key in required {
            v["properties"][*key] = json!({"type": "string", "minLength": 1});
        }
        v
    };
    let mut login = schema(schemars::schema_for!(LoginBody), &["password"]);
    let named = |key: &str| json!({"required": [key], "properties": {key: {"type": "string", "minLength": 1}}});
    login["anyOf"] = json!([named("username"), named("email"), named("login")]);
    let code = || schemars::schema_for!(CodeBody);
    vec![
        ("login", login),
        ("refresh", {
            let mut refresh = schema(schemars::schema_for!(RefreshBody), &["refreshToken"]);
            refresh["properties"]["refreshToken"]["pattern"] = json!(format!("^{REFRESH_PREFIX}"));
            refresh
        }),
        (
            "register",
            schema(schemars::schema_for!(RegisterBody), &["email", "password"]),
        ),
        ("mfa/confirm", schema(code(), &["code"])),
        ("mfa/verify", schema(code(), &["code", "mfaToken"])),
        ("mfa/disable", schema(code(), &["code", "password"])),
    ]
}

pub fn routes(prefix: &str) -> Router<AppState> {
    let at = |path: &str| format!("{prefix}/auth/{path}");
    Router::new()
        .route(&at("login"), post(login))
        .route(&at("register"), post(register))
        .route(&at("refresh"), post(refresh))
        .route(&at("logout"), post(logout))
        .route(&at("logout-all"), post(logout_all))
        .route(&at("me"), get(me))
        .route(&at("mfa/setup"), post(mfa_setup))
        .route(&at("mfa/enable"), post(mfa_setup))
        .route(&at("mfa/confirm"), post(mfa_confirm))
        .route(&at("mfa/verify"), post(mfa_verify))
        .route(&at("mfa/disable"), post(mfa_disable))
}

#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct LoginBody {
    username: Option<String>,
    email: Option<String>,
    login: Option<String>,
    password: String,
    mfa_code: Option<String>,
}

async fn login(
    State(state): State<AppState>,
    who: Caller,
    Typed(b): Typed<LoginBody>,
) -> Result<Json<Value>, ApiError> {
    let Some(name) = b.login.or(b.username).or(b.email) else {
        return Err(who.fail(IrisError::validation(
            "username",
            "give a username or an email",
        )));
    };
    let req = Login {
        login: name,
        password: b.password,
        mfa_code: b.mfa_code,
    };
    answer(&who, state.iris.accounts().login(req, &who.origin).await)
}

/// `POST /auth/register` (seed 003): `{email, password, username?}`; the
/// seed's `name`, `organization` and `phone` are accepted and not kept.
#[derive(Deserialize, Default, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RegisterBody {
    email: Option<String>,
    password: Option<String>,
    /// The login name; the email's local part when absent.
    username: Option<String>,
    #[serde(rename = "name")]
    _name: Option<String>,
    #[serde(rename = "organization")]
    _organization: Option<String>,
    #[serde(rename = "phone")]
    _phone: Option<String>,
}

/// 201 with the new account (`status: disabled` until an administrator
/// enables it when `auth.registration` is `approval`); 403 when closed.
async fn register(
    State(state): State<AppState>,
    who: Caller,
    Typed(b): Typed<RegisterBody>,
) -> Result<(axum::http::StatusCode, Json<Value>), ApiError> {
    let (Some(email), Some(password)) = (b.email, b.password) else {
        return Err(who.fail(IrisError::validation(
            "email",
            "email and password are required",
        )));
    };
    let req = iris_core::auth::SignUp {
        email,
        password,
        username: b.username,
    };
    let user = state
        .iris
        .accounts()
        .register(req, &who.origin)
        .await
        .map_err(|e| who.fail(e))?;
    Ok((axum::http::StatusCode::CREATED, Json(user)))
}

#[derive(Deserialize, Default, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RefreshBody {
    refresh_token: Option<String>,
}

async fn refresh(
    State(state): State<AppState>,
    who: Caller,
    headers: HeaderMap,
    Typed(b): Typed<RefreshBody>,
) -> Result<Json<Value>, ApiError> {
    // Seed 003 sends it as the bearer; a JSON body works too.
    let from_header = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' ').map(|(_, t)| t.trim()))
        .filter(|t| t.starts_with(REFRESH_PREFIX))
        .map(str::to_owned);
    let Some(token) = b.refresh_token.or(from_header) else {
        return Err(who.fail(IrisError::validation(
            "refreshToken",
            "required (body or Authorization: Bearer iris_rt_…)",
        )));
    };
    answer(
        &who,
        state.iris.accounts().refresh(&token, &who.origin).await,
    )
}

async fn logout(
    State(state): State<AppState>,
    who: Caller,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Result<Json<Value>, ApiError> {
    who.ctx()?;
    let token = auth::credential(&headers, &uri, false).unwrap_or_default();
    state
        .iris
        .accounts()
        .logout(token, &who.origin)
        .await
        .map_err(|e| who.fail(e))?;
    Ok(Json(
        json!({"message": "Successfully logged out", "timestamp": iris_core::now_ms()}),
    ))
}

/// The JSON answer of an account call, or its error body.
fn answer(who: &Caller, r: Result<Value, IrisError>) -> Result<Json<Value>, ApiError> {
    r.map(Json).map_err(|e| who.fail(e))
}

async fn logout_all(State(state): State<AppState>, who: Caller) -> Result<Json<Value>, ApiError> {
    let ctx = who.ctx()?;
    let ended = state.iris.accounts().logout_all(&ctx).await;
    answer(
        &who,
        ended.map(|()| json!({"message": "Every session ended", "timestamp": iris_core::now_ms()})),
    )
}

async fn me(State(state): State<AppState>, who: Caller) -> Result<Json<Value>, ApiError> {
    let ctx = who.ctx()?;
    answer(&who, state.iris.accounts().me(&ctx).await)
}

async fn mfa_setup(State(state): State<AppState>, who: Caller) -> Result<Json<Value>, ApiError> {
    let ctx = who.ctx()?;
    answer(&who, state.iris.accounts().mfa_setup(&ctx).await)
}

#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CodeBody {
    code: String,
    /// Seed 003 sends `type: "totp"`; only TOTP exists.
    #[serde(rename = "type")]
    _kind: Option<String>,
    mfa_token: Option<String>,
    password: Option<String>,
}

async fn mfa_confirm(
    State(state): State<AppState>,
    who: Caller,
    Typed(b): Typed<CodeBody>,
) -> Result<Json<Value>, ApiError> {
    let ctx = who.ctx()?;
    answer(&who, state.iris.accounts().mfa_confirm(&ctx, &b.code).await)
}

/// The second step of a login: the `mfaToken` of the challenge and a code.
async fn mfa_verify(
    State(state): State<AppState>,
    who: Caller,
    Typed(b): Typed<CodeBody>,
) -> Result<Json<Value>, ApiError> {
    let Some(token) = b.mfa_token else {
        return Err(who.fail(IrisError::validation(
            "mfaToken",
            "required: the token of the login's MFA challenge",
        )));
    };
    answer(
        &who,
        state
            .iris
            .accounts()
            .mfa_verify(&token, &b.code, &who.origin)
            .await,
    )
}

async fn mfa_disable(
    State(state): State<AppState>,
    who: Caller,
    Typed(b): Typed<CodeBody>,
) -> Result<Json<Value>, ApiError> {
    let Some(password) = b.password else {
        return Err(who.fail(IrisError::validation("password", "required")));
    };
    let ctx = who.ctx()?;
    answer(
        &who,
        state
            .iris
            .accounts()
            .mfa_disable(&ctx, &password, &b.code)
            .await,
    )
}
