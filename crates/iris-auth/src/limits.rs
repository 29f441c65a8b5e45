//! Every rate limit, decided in one place ([`Limits`]), and the
//! in-process decision ([`LocalLimits`]).

use std::net::IpAddr;

use crate::principal::Principal;
use crate::rate::{Decision, PerIp, Rate};

/// Every rate limit Iris applies, decided in one place: per identity
/// (requests and messages), per client address before authentication, and
/// per address for login attempts. [`LocalLimits`] counts in this
/// process; a cluster's decides for all nodes at once behind this same
/// interface. `None`: not limited (limits are off, or the identity has none).
pub trait Limits: Send + Sync {
    /// Count a request of `principal`.
    fn request(&self, principal: &Principal) -> Option<Decision>;
    /// Count a message-sending operation of `principal`.
    fn message(&self, principal: &Principal) -> Option<Decision>;
    /// Count a request without a credential (or a failed one) from `ip`.
    fn address(&self, ip: IpAddr) -> Option<Decision>;
    /// Count a login attempt from `ip`.
    fn login(&self, ip: IpAddr) -> Option<Decision>;
    /// Forget buckets that are full again (called now and then).
    fn sweep(&self);
}

/// [`Limits`] in this process's memory: each identity's buckets travel
/// with its principal ([`IdentityLimits`], built when keys and users are
/// loaded), addresses have a bucket each.
pub struct LocalLimits {
    enabled: bool,
    per_ip: PerIp,
    login: PerIp,
}

impl LocalLimits {
    pub fn new(enabled: bool, per_ip: Rate, login: Rate) -> Self {
        LocalLimits {
            enabled,
            per_ip: PerIp::new(per_ip),
            login: PerIp::new(login),
        }
    }
}

impl Limits for LocalLimits {
    fn request(&self, principal: &Principal) -> Option<Decision> {
        if !self.enabled {
            return None;
        }
        principal.limits.as_ref().map(|l| l.requests.check())
    }

    fn message(&self, principal: &Principal) -> Option<Decision> {
        if !self.enabled {
            return None;
        }
        principal.limits.as_ref().map(|l| l.messages.check())
    }

    fn address(&self, ip: IpAddr) -> Option<Decision> {
        self.enabled.then(|| self.per_ip.check(ip))
    }

    fn login(&self, ip: IpAddr) -> Option<Decision> {
        self.enabled.then(|| self.login.check(ip))
    }

    fn sweep(&self) {
        self.per_ip.sweep();
        self.login.sweep();
    }
}
