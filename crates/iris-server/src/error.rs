//! The one error body (DESIGN section 6) as an HTTP response.

use axum::Json;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use iris_core::{ErrorKind, IrisError, now_ms};

use crate::request::RequestId;

/// An `IrisError` with the request it answers.
#[derive(Debug)]
pub struct ApiError {
    pub error: IrisError,
    pub request_id: Option<String>,
    /// Overrides the kind's status where HTTP has a closer one (405).
    pub status: Option<StatusCode>,
}

impl ApiError {
    pub fn new(error: IrisError, request_id: &RequestId) -> Self {
        ApiError {
            error,
            request_id: Some(request_id.0.to_string()),
            status: None,
        }
    }
}

impl IntoResponse for ApiError {
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

pub async fn wrong_method(id: RequestId, uri: Uri) -> ApiError {
    let mut e = ApiError::new(
        IrisError::new(
            ErrorKind::MethodNotFound,
            format!("method not allowed on {}", uri.path()),
        ),
        &id,
    );
    e.status = Some(StatusCode::METHOD_NOT_ALLOWED);
    e
}
