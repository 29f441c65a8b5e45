//! Access tokens: short-lived JWTs, HS256 only (so `alg: none` and
//! algorithm confusion are refused), with the sign-ins ended before their
//! tokens expire.

use std::collections::HashMap;
use std::sync::RwLock;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::audit::now_ms;
use crate::error::{AuthError, Result};

pub(crate) const ISSUER: &str = "iris";

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Claims {
    pub(crate) iss: String,
    pub(crate) sub: String,
    /// `access`, or `mfa` for the token between the two login steps.
    pub(crate) typ: String,
    /// The refresh-token family (one login).
    pub(crate) sid: String,
    /// The user's token version: bumping it ends every session at once.
    pub(crate) ver: i64,
    pub(crate) iat: i64,
    pub(crate) exp: i64,
    pub(crate) jti: String,
}

pub(crate) struct Jwt {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    /// The same, past `exp` too: an open connection lives as long as its
    /// sign-in, not its first access token (`crate::standing`).
    lasting: Validation,
    /// Families ended by logout, until their access tokens expire.
    ended: RwLock<HashMap<String, i64>>,
}

impl Jwt {
    /// Tokens signed with `secret_hex`, accepted up to `leeway` past expiry.
    pub(crate) fn new(secret_hex: &str, leeway: std::time::Duration) -> Result<Self> {
        let secret = hex::decode(secret_hex)
            .map_err(|e| AuthError::Internal(format!("the stored JWT secret is not hex: {e}")))?;
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        validation.leeway = leeway.as_secs();
        let mut lasting = validation.clone();
        lasting.validate_exp = false;
        Ok(Jwt {
            encoding: EncodingKey::from_secret(&secret),
            decoding: DecodingKey::from_secret(&secret),
            validation,
            lasting,
            ended: RwLock::default(),
        })
    }

    pub(crate) fn sign(&self, claims: &Claims) -> Result<String> {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .map_err(|e| AuthError::Internal(format!("signing a token: {e}")))
    }

    pub(crate) fn verify(&self, token: &str, typ: &str) -> Result<Claims> {
        self.verify_with(token, typ, &self.validation)
    }

    /// An access token's claims, expired or not (its signature checked).
    pub(crate) fn verify_lasting(&self, token: &str) -> Result<Claims> {
        self.verify_with(token, "access", &self.lasting)
    }

    fn verify_with(&self, token: &str, typ: &str, validation: &Validation) -> Result<Claims> {
        let data =
            jsonwebtoken::decode::<Claims>(token, &self.decoding, validation).map_err(|e| {
                use jsonwebtoken::errors::ErrorKind as K;
                AuthError::unauthorized(match e.kind() {
                    K::ExpiredSignature => "access token expired".to_owned(),
                    K::InvalidAlgorithm | K::InvalidAlgorithmName => {
                        "token algorithm not accepted (HS256 only)".to_owned()
                    }
                    K::InvalidSignature => "token signature invalid".to_owned(),
                    _ => format!("invalid token: {e}"),
                })
            })?;
        if data.claims.typ != typ {
            return Err(AuthError::unauthorized(format!(
                "a `{}` token cannot be used here",
                data.claims.typ
            )));
        }
        Ok(data.claims)
    }

    pub(crate) fn ended(&self, sid: &str) -> bool {
        self.ended
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(sid)
    }

    pub(crate) fn end(&self, sid: &str, until: i64) {
        let mut ended = self.ended.write().unwrap_or_else(|p| p.into_inner());
        let now = now_ms();
        ended.retain(|_, t| *t > now);
        ended.insert(sid.to_owned(), until);
    }
}
