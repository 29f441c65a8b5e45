//! Whether a credential still stands, for connections that outlive the
//! request that opened them (WebSockets, Socket.IO, event streams, MCP
//! streams). Such a connection keeps its credential, checks it again
//! before carrying out each message ([`Auth::standing`]), and watches
//! [`Auth::changes`], which ticks whenever anything that could end or
//! change a credential happened — in this process (a key revoked, a user
//! disabled, a sign-out, an agent's process ended) or in another one
//! sharing the database (seen by the cache reload within 250 ms).
//!
//! What a connection's credential is good for:
//! - an API key: until it is revoked or expires (a rotated key: until its
//!   grace ends);
//! - a user's access token: as long as its sign-in (the refresh-token
//!   family) and the user stay valid — not just until the token's own
//!   expiry, so a browser's connections live across token refreshes;
//! - an agent's credential: until its process ends.
//!
//! Role and scope changes reach the connection too: [`Standing`] carries
//! the principal as it is now.

use std::sync::Arc;

use tokio::sync::watch;

use crate::agents;
use crate::auth::Auth;
use crate::error::Result;
use crate::key_format::KEY_PREFIX;
use crate::principal::Principal;

/// A credential as it stands now.
#[derive(Debug, Clone)]
pub struct Standing {
    pub principal: Arc<Principal>,
    /// When it ends by itself (Unix ms): a key's or an agent credential's
    /// expiry. `None` for a user's sign-in (it ends by being ended).
    pub ends_at: Option<i64>,
}

impl Auth {
    /// Ticks whenever a credential may have ended or changed.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Tell open connections to check their credentials again.
    pub(crate) fn announce(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Whether `credential` still stands, and for whom: the check an open
    /// connection makes before each message and on each change. Not
    /// audited or counted (the connection's opening was).
    ///
    /// # Errors
    /// `Unauthorized` with the reason (revoked, expired, disabled, signed out).
    pub fn standing(&self, credential: &str) -> Result<Standing> {
        if credential.starts_with(KEY_PREFIX) {
            let entry = self.live_key(credential, "API key deleted")?;
            return Ok(Standing {
                principal: entry.principal.clone(),
                ends_at: entry.expires_at,
            });
        }
        if credential.starts_with(agents::AGENT_PREFIX) {
            let (principal, ends_at) = self.agents.standing(credential)?;
            return Ok(Standing {
                principal,
                ends_at: Some(ends_at),
            });
        }
        let claims = self.jwt.verify_lasting(credential)?;
        Ok(Standing {
            principal: self.token_user(&claims)?,
            ends_at: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::audit::Origin;
    use crate::auth::testing::{auth, login, with_user};
    use crate::keys::NewKey;
    use crate::principal::Principal;

    #[tokio::test]
    async fn a_key_stands_until_revoked_and_changes_tick() {
        let (a, _d) = auth().await;
        let (key, info) = a
            .create_key(
                NewKey::with_role("k", "developer"),
                &Principal::local(),
                &Origin::default(),
            )
            .await
            .unwrap();
        let mut changes = a.changes();
        changes.borrow_and_update();
        assert!(a.standing(&key).unwrap().principal.allows("teams:write"));
        a.revoke_key(&info.id, &Principal::local(), &Origin::default())
            .await
            .unwrap();
        assert!(changes.has_changed().unwrap());
        let e = a.standing(&key).unwrap_err();
        assert!(e.to_string().contains("revoked"), "{e}");
    }

    #[tokio::test]
    async fn a_user_connection_outlives_its_token_but_not_its_sign_in() {
        let (a, _d) = with_user().await;
        let t = a
            .login(login("ann", "Correct-Horse-42"), &Origin::default(), None)
            .await
            .unwrap();
        assert_eq!(a.standing(&t.access_token).unwrap().principal.name, "ann");
        assert_eq!(a.standing(&t.access_token).unwrap().ends_at, None);
        let mut changes = a.changes();
        changes.borrow_and_update();
        a.logout(&t.access_token, &Origin::default()).await.unwrap();
        assert!(changes.has_changed().unwrap());
        assert!(a.standing(&t.access_token).is_err());
    }
}
