//! The one error type of Iris, and its one table of HTTP statuses and
//! JSON-RPC codes (DESIGN section 6). Every transport maps errors through here.

use serde_json::{Map, Value, json};

/// What went wrong, as a caller sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    Validation,
    Unauthorized,
    Forbidden,
    NotFound,
    TeamNotFound,
    SessionNotFound,
    Timeout,
    Conflict,
    RateLimited,
    QueueFull,
    Process,
    Internal,
    PoolExhausted,
    ServiceUnavailable,
    MethodNotFound,
    MalformedJson,
    /// A JSON-RPC message that is not a valid request object (JSON-RPC 2.0 section 4).
    InvalidRequest,
}

/// `(error name, code, HTTP status, JSON-RPC code)` for each kind.
const TABLE: &[(ErrorKind, &str, &str, u16, i32)] = &[
    (
        ErrorKind::Validation,
        "ValidationError",
        "VALIDATION_ERROR",
        400,
        -32602,
    ),
    (
        ErrorKind::Unauthorized,
        "UnauthorizedError",
        "UNAUTHORIZED",
        401,
        -32001,
    ),
    (
        ErrorKind::Forbidden,
        "ForbiddenError",
        "FORBIDDEN",
        403,
        -32003,
    ),
    (
        ErrorKind::NotFound,
        "NotFoundError",
        "NOT_FOUND",
        404,
        -32004,
    ),
    (
        ErrorKind::TeamNotFound,
        "TeamNotFoundError",
        "TEAM_NOT_FOUND",
        404,
        -32004,
    ),
    (
        ErrorKind::SessionNotFound,
        "SessionNotFoundError",
        "SESSION_NOT_FOUND",
        404,
        -32004,
    ),
    (ErrorKind::Timeout, "TimeoutError", "TIMEOUT", 408, -32008),
    (
        ErrorKind::Conflict,
        "ConflictError",
        "CONFLICT",
        409,
        -32009,
    ),
    (
        ErrorKind::RateLimited,
        "TooManyRequestsError",
        "RATE_LIMITED",
        429,
        -32029,
    ),
    (
        ErrorKind::QueueFull,
        "QueueFullError",
        "QUEUE_FULL",
        429,
        -32029,
    ),
    (
        ErrorKind::Process,
        "ProcessError",
        "PROCESS_ERROR",
        500,
        -32603,
    ),
    (
        ErrorKind::Internal,
        "InternalError",
        "INTERNAL_ERROR",
        500,
        -32603,
    ),
    (
        ErrorKind::PoolExhausted,
        "ProcessPoolLimitError",
        "POOL_EXHAUSTED",
        503,
        -32053,
    ),
    (
        ErrorKind::ServiceUnavailable,
        "ServiceUnavailableError",
        "SERVICE_UNAVAILABLE",
        503,
        -32053,
    ),
    (
        ErrorKind::MethodNotFound,
        "MethodNotFoundError",
        "METHOD_NOT_FOUND",
        404,
        -32601,
    ),
    (
        ErrorKind::MalformedJson,
        "ParseError",
        "MALFORMED_JSON",
        400,
        -32700,
    ),
    (
        ErrorKind::InvalidRequest,
        "InvalidRequestError",
        "INVALID_REQUEST",
        400,
        -32600,
    ),
];

impl ErrorKind {
    fn row(self) -> (&'static str, &'static str, u16, i32) {
        TABLE
            .iter()
            .find(|r| r.0 == self)
            .map(|r| (r.1, r.2, r.3, r.4))
            .unwrap_or(("InternalError", "INTERNAL_ERROR", 500, -32603))
    }
    pub fn name(self) -> &'static str {
        self.row().0
    }
    pub fn code(self) -> &'static str {
        self.row().1
    }
    pub fn http_status(self) -> u16 {
        self.row().2
    }
    pub fn jsonrpc_code(self) -> i32 {
        self.row().3
    }
}

/// An error with a message safe to show a caller (no paths of the server,
/// no secrets, no stack traces) and optional structured details.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct IrisError {
    pub kind: ErrorKind,
    pub message: String,
    pub details: Option<Value>,
}

pub type Result<T, E = IrisError> = std::result::Result<T, E>;

/// Longest error message in a body, and string in its details (chars).
const MESSAGE_CHARS: usize = 1024;
const DETAIL_CHARS: usize = 512;

/// `text` cut to `max` chars, saying how much went.
fn cut(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    match text.char_indices().nth(max) {
        None => std::borrow::Cow::Borrowed(text),
        Some((end, _)) => std::borrow::Cow::Owned(format!(
            "{}… ({} more bytes cut)",
            &text[..end],
            text.len() - end
        )),
    }
}

fn cut_strings(v: &mut Value) {
    match v {
        Value::String(s) if s.len() > DETAIL_CHARS => {
            *s = cut(s, DETAIL_CHARS).into_owned();
        }
        Value::Array(items) => items.iter_mut().for_each(cut_strings),
        Value::Object(m) => m.values_mut().for_each(cut_strings),
        _ => {}
    }
}

/// The constructors are `#[cold]`: they are only reached on the way to an
/// error, and telling the compiler so moves those paths out of the hot
/// code around them (fewer instruction-cache lines touched per request).
impl IrisError {
    #[cold]
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        IrisError {
            kind,
            message: message.into(),
            details: None,
        }
    }

    /// The error another node answered with (its error body).
    #[cold]
    pub fn from_body(body: &Value) -> Self {
        let code = body["code"].as_str().unwrap_or_default();
        let kind = TABLE
            .iter()
            .find(|r| r.2 == code)
            .map(|r| r.0)
            .unwrap_or(ErrorKind::Internal);
        let message = body["message"]
            .as_str()
            .unwrap_or("another node failed the call")
            .to_owned();
        let e = IrisError::new(kind, message);
        match body.get("details") {
            Some(d) if !d.is_null() => e.with_details(d.clone()),
            _ => e,
        }
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    #[cold]
    pub fn validation(field: &str, problem: impl Into<String>) -> Self {
        let problem = problem.into();
        Self::new(ErrorKind::Validation, format!("{field}: {problem}"))
            .with_details(json!({"fields": {field: problem}}))
    }
    #[cold]
    pub fn team_not_found(team: &str) -> Self {
        Self::new(
            ErrorKind::TeamNotFound,
            format!("team `{team}` does not exist"),
        )
        .with_details(json!({"team": team}))
    }
    #[cold]
    pub fn session_not_found(what: impl std::fmt::Display) -> Self {
        Self::new(ErrorKind::SessionNotFound, format!("no session {what}"))
    }
    #[cold]
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }
    #[cold]
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Conflict, message)
    }
    #[cold]
    pub fn process(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Process, message)
    }
    /// An unexpected failure: the cause is logged, the caller sees a generic message.
    #[cold]
    pub fn internal(context: &str, cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "{context}");
        Self::new(
            ErrorKind::Internal,
            format!("internal error while {context}"),
        )
    }

    /// The flat JSON body of DESIGN section 6. Long values a caller sent
    /// (a 5 MB header named in a message and again in `details`) are cut.
    pub fn body(&self, request_id: Option<&str>, timestamp: i64) -> Value {
        let mut m = Map::new();
        m.insert("error".into(), self.kind.name().into());
        m.insert("code".into(), self.kind.code().into());
        m.insert("message".into(), cut(&self.message, MESSAGE_CHARS).into());
        m.insert("statusCode".into(), self.kind.http_status().into());
        m.insert("timestamp".into(), timestamp.into());
        if let Some(id) = request_id {
            m.insert("requestId".into(), id.into());
        }
        if let Some(d) = &self.details {
            let mut d = d.clone();
            cut_strings(&mut d);
            m.insert("details".into(), d);
        }
        Value::Object(m)
    }

    /// A JSON-RPC 2.0 error object; `data` carries the flat body.
    pub fn jsonrpc(&self, request_id: Option<&str>, timestamp: i64) -> Value {
        json!({
            "code": self.kind.jsonrpc_code(),
            "message": cut(&self.message, MESSAGE_CHARS),
            "data": self.body(request_id, timestamp),
        })
    }
}

impl From<iris_storage::StoreError> for IrisError {
    fn from(e: iris_storage::StoreError) -> Self {
        IrisError::from_store("using the database", e)
    }
}

impl IrisError {
    /// A database failure: `SERVICE_UNAVAILABLE` while the database cannot
    /// be reached (try again), else an internal error.
    pub fn from_store(context: &str, e: iris_storage::StoreError) -> Self {
        if let Some(f) = e.fenced_by() {
            tracing::warn!(team = %f.team, "{context}: refused, another node took the team over");
            return IrisError::new(
                ErrorKind::Conflict,
                format!("{f}; try again (the call goes to the new owner)"),
            );
        }
        if e.is_missing_reference() {
            // Expected when a conversation is deleted as a message or job
            // is written for it; logged, since any other case is a bug.
            tracing::warn!(error = %e, "{context}: a row refers to one that is gone");
            return IrisError::new(
                ErrorKind::Conflict,
                format!(
                    "{context}: what it belongs to (e.g. its conversation) was deleted meanwhile; try again"
                ),
            );
        }
        if e.is_unavailable() {
            tracing::warn!(error = %e, "{context}: the database is not reachable");
            return IrisError::new(
                ErrorKind::ServiceUnavailable,
                "the database is not reachable; try again shortly",
            );
        }
        IrisError::internal(context, e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_a_row_and_the_body_is_flat() {
        for (kind, name, code, status, rpc) in TABLE {
            assert_eq!(
                (
                    kind.name(),
                    kind.code(),
                    kind.http_status(),
                    kind.jsonrpc_code()
                ),
                (*name, *code, *status, *rpc)
            );
        }
        let b = IrisError::team_not_found("x").body(Some("req_1"), 5);
        assert_eq!(b["error"], "TeamNotFoundError");
        assert_eq!(b["code"], "TEAM_NOT_FOUND");
        assert_eq!(b["statusCode"], 404);
        assert_eq!(b["timestamp"], 5);
        assert_eq!(b["requestId"], "req_1");
        assert_eq!(b["details"]["team"], "x");
        let r = IrisError::validation("message", "must not be empty").jsonrpc(None, 1);
        assert_eq!(r["code"], -32602);
        assert_eq!(
            r["data"]["details"]["fields"]["message"],
            "must not be empty"
        );
    }
}
