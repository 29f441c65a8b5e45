//! Credentials held by connections that outlive their request (WebSockets,
//! Socket.IO, event streams, MCP's streams), and the one late login of
//! WebSockets and Socket.IO. A connection checks its credential again
//! before it carries out each message ([`Held::check`]: a lowered role
//! applies to the next one) and ends within a second of the credential's
//! end — revoked, expired, disabled, signed out — with the reason
//! ([`Held::ended`], from `iris_auth::standing`).

use std::sync::Arc;

use axum::body::{Body, Bytes};
use futures_util::StreamExt;
use iris_core::auth::{Auth, Origin, Principal, Standing};
use iris_core::{ErrorKind, IrisError, now_ms};

use crate::state::AppState;

/// A credential an open connection holds, and what it stood for when last
/// checked.
pub struct Held {
    credential: Arc<str>,
    standing: Standing,
}

impl Held {
    /// `credential` as it stands now.
    ///
    /// # Errors
    /// Why it does not (`Unauthorized`).
    pub fn new(auth: &Auth, credential: Arc<str>) -> Result<Held, IrisError> {
        let standing = auth.standing(&credential)?;
        Ok(Held {
            credential,
            standing,
        })
    }

    pub fn principal(&self) -> &Arc<Principal> {
        &self.standing.principal
    }

    /// Check again (before carrying out a message): the principal as it
    /// is now, roles and scopes included.
    ///
    /// # Errors
    /// Why the credential no longer stands.
    pub fn check(&mut self, auth: &Auth) -> Result<Arc<Principal>, IrisError> {
        self.standing = auth.standing(&self.credential).map_err(ended)?;
        Ok(self.standing.principal.clone())
    }

    /// When the credential ends by itself (a key's expiry), on tokio's clock.
    pub fn deadline(&self) -> Option<tokio::time::Instant> {
        self.standing.ends_at.map(|at| {
            let left = u64::try_from(at - now_ms()).unwrap_or(0);
            tokio::time::Instant::now() + std::time::Duration::from_millis(left)
        })
    }

    /// Wait until the credential no longer stands: why. Changes that leave
    /// it standing (a new role) are taken on the way.
    pub async fn ended(&mut self, auth: &Auth) -> IrisError {
        let mut changes = auth.changes();
        loop {
            let deadline = self.deadline();
            tokio::select! {
                changed = changes.changed() => {
                    if changed.is_err() {
                        // Auth is gone: the server is stopping, which ends
                        // connections its own way.
                        std::future::pending::<()>().await;
                    }
                }
                () = until(deadline) => {}
            }
            if let Err(e) = self.check(auth) {
                return e;
            }
        }
    }
}

/// Sleep until `deadline`, or forever.
pub async fn until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The error a connection ends with: 401 with the reason.
fn ended(e: iris_core::auth::AuthError) -> IrisError {
    let e = IrisError::from(e);
    IrisError::new(
        ErrorKind::Unauthorized,
        format!(
            "the connection's credential no longer stands: {}",
            e.message
        ),
    )
}

/// A WebSocket's or Socket.IO socket's first-message (or handshake)
/// credential: counted against the address like a failed credential at
/// the gate (a socket is no way around the per-address limit), then
/// authenticated and audited as the gate does.
///
/// # Errors
/// `RateLimited`, or why the credential is refused.
pub async fn late_login(state: &AppState, origin: &Origin, token: &str) -> Result<Held, IrisError> {
    let auth = state.iris.auth();
    let limit = match origin.ip {
        Some(ip) => auth.limit_ip(ip).await,
        None => None,
    };
    if let Some(d) = limit.filter(|d| !d.allowed) {
        return Err(super::too_many(&d));
    }
    auth.authenticate(token, origin)?;
    Held::new(auth, token.into())
}

/// An event stream's body, ended when its credential stops standing:
/// with an `error` event (the error body) first when `announce`, else
/// just closed (MCP's streams: the client reconnects and is refused).
pub fn stream_until_ended(body: Body, mut held: Held, auth: Arc<Auth>, announce: bool) -> Body {
    let ended = Box::pin(async move { held.ended(&auth).await });
    let data = body.into_data_stream();
    let stream = futures_util::stream::unfold(Some((data, ended)), move |state| async move {
        let (mut data, mut ended) = state?;
        tokio::select! {
            biased;
            e = &mut ended => announce.then(|| {
                let body = serde_json::json!({"error": e.body(None, now_ms())});
                let event = format!("event: error\ndata: {body}\n\n");
                (Ok::<Bytes, axum::Error>(Bytes::from(event)), None)
            }),
            chunk = data.next() => chunk.map(|c| (c, Some((data, ended)))),
        }
    });
    Body::from_stream(stream)
}
