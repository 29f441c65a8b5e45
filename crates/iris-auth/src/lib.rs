//! Who may do what in Iris (DESIGN section 7).
//!
//! [`Auth`] holds the key and user caches (so verifying a credential never
//! queries the database), the rate-limit buckets, the JWT secret and the
//! audit writer. Every transport authenticates through [`Auth::authenticate`];
//! scopes are checked once, in the core's dispatch.

pub mod agents;
pub mod audit;
mod auth;
pub mod error;
mod jwt;
mod key_format;
mod keys;
pub mod limits;
mod mfa;
pub mod principal;
pub mod rate;
pub mod scope;
pub mod secret;
mod session;
mod settings;
mod signins;
pub mod standing;
mod users;
pub mod witness;

pub use audit::{AuditEvent, Auditor, Origin, Outcome, Severity, now_ms};
pub use auth::Auth;
pub use error::{AuthError, Result};
pub use key_format::KEY_PREFIX;
pub use keys::{KeyInfo, NewKey};
pub use limits::{ClusterLimits, Limits, LocalLimits};
pub use principal::{Principal, PrincipalKind};
pub use rate::{Decision, IdentityLimits, Rate, parse_duration};
pub use session::{Login, Tokens};
pub use settings::Settings;
pub use signins::{Registration, SignUp};
pub use standing::Standing;
pub use users::{NewUser, UserInfo, UserUpdate};
