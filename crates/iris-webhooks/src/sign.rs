//! The `X-Iris-Signature` header: `t=<unix seconds>,v1=<hex HMAC-SHA256 of
//! "<t>.<raw body>" keyed with the secret>` (the scheme Stripe popularised:
//! the timestamp inside the MAC stops replays of old deliveries).

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// The header's name.
pub const HEADER: &str = "X-Iris-Signature";

fn mac(secret: &str, t: i64, body: &[u8]) -> Option<Hmac<Sha256>> {
    let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).ok()?;
    m.update(t.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    Some(m)
}

/// The header value for `body` signed at `t` (Unix seconds).
pub fn signature(secret: &str, t: i64, body: &[u8]) -> String {
    let v1 = mac(secret, t, body)
        .map(|m| hex::encode(m.finalize().into_bytes()))
        .unwrap_or_default();
    format!("t={t},v1={v1}")
}

/// Whether `header` is a valid signature of `body` with `secret`, made at
/// most `tolerance_secs` from `now` (Unix seconds). The comparison is in
/// constant time.
pub fn verify(header: &str, secret: &str, body: &[u8], now: i64, tolerance_secs: i64) -> bool {
    let mut t = None;
    let mut v1 = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = v.parse::<i64>().ok(),
            Some(("v1", v)) => v1.extend(hex::decode(v).ok()),
            _ => {}
        }
    }
    let Some(t) = t else { return false };
    if (now - t).abs() > tolerance_secs {
        return false;
    }
    v1.iter()
        .any(|sig| mac(secret, t, body).is_some_and(|m| m.verify_slice(sig).is_ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_and_verifies() {
        let body = br#"{"jobId":"msg_1","status":"completed"}"#;
        let h = signature("s3cret", 1_700_000_000, body);
        assert!(h.starts_with("t=1700000000,v1="));
        assert!(verify(&h, "s3cret", body, 1_700_000_010, 300));
        assert!(
            !verify(&h, "other", body, 1_700_000_010, 300),
            "wrong secret"
        );
        assert!(
            !verify(
                &h,
                "s3cret",
                br#"{"jobId":"msg_1","status":"failed"}"#,
                1_700_000_010,
                300
            ),
            "tampered body"
        );
        assert!(!verify(&h, "s3cret", body, 1_700_001_000, 300), "too old");
        assert!(
            !verify("v1=00", "s3cret", body, 1_700_000_000, 300),
            "no timestamp"
        );
    }

    #[test]
    fn matches_an_independent_hmac() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        // Signing splits the data as "<t>.<body>": t = "what do ya want for nothing?" cannot be
        // a number, so check the MAC itself.
        let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(b"Jefe").unwrap();
        m.update(b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(m.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
