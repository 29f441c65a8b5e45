//! The one error body (DESIGN section 6) as an HTTP response.

use axum::Json;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use iris_core::{ErrorKind, IrisError, now_ms};

/// `X-Request-ID` of this request (the caller's, or `req_<ulid>`); shared,
/// so the copies in the request, its context and errors do not allocate.
#[derive(Debug, Clone)]
pub struct RequestId(pub std::sync::Arc<str>);

/// An `IrisError` with the request it answers.
#[derive(Debug)]
pub struct ApiError {
    pub error: IrisError,
    pub request_id: Option<String>,
    /// Overrides the kind's status where HTTP has a closer one (405).
    pub status: Option<StatusCode>,
}

/// Cold, like `IrisError`'s constructors: only error paths reach these.
impl ApiError {
    #[cold]
    pub fn new(error: IrisError, request_id: &RequestId) -> Self {
        Self::maybe(error, Some(request_id))
    }

    /// For the few answers made where the request id may be missing.
    #[cold]
    pub fn maybe(error: IrisError, request_id: Option<&RequestId>) -> Self {
        ApiError {
            error,
            request_id: request_id.map(|r| r.0.to_string()),
            status: None,
        }
    }

    /// With a status closer than the kind's (405, 413).
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = Some(status);
        self
    }
}

impl IntoResponse for ApiError {
    #[cold]
    fn into_response(self) -> Response {
        let status = self.status.unwrap_or_else(|| {
            StatusCode::from_u16(self.error.kind.http_status())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
        });
        let mut body = self.error.body(self.request_id.as_deref(), now_ms());
        body["statusCode"] = status.as_u16().into();
        let retry = self
            .error
            .details
            .as_ref()
            .and_then(|d| d.get("retryAfterMs"))
            .and_then(serde_json::Value::as_u64);
        let mut resp = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            // RFC 6750 §3: how to authenticate (MCP clients read it, 2025-11-25 §Authorization).
            resp.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer realm=\"iris\""),
            );
        }
        if let Some(ms) = retry {
            resp.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                ms.div_ceil(1000).max(1).into(),
            );
        }
        resp
    }
}

pub async fn unknown_route(id: RequestId, uri: Uri) -> ApiError {
    ApiError::new(
        IrisError::not_found(format!("no route {}", uri.path()))
            .with_details(serde_json::json!({"path": uri.path()})),
        &id,
    )
}

/// 405; axum adds the `Allow` header naming the methods the path answers.
pub async fn wrong_method(id: RequestId, uri: Uri) -> ApiError {
    ApiError::new(
        IrisError::new(
            ErrorKind::MethodNotFound,
            format!("method not allowed on {}", uri.path()),
        ),
        &id,
    )
    .with_status(StatusCode::METHOD_NOT_ALLOWED)
}
