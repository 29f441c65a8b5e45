//! Every rate limit, decided in one place ([`Limits`]): in this process
//! ([`LocalLimits`]) or for a whole cluster in Redis ([`ClusterLimits`]).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use iris_cluster::{Allowance, Link};

use crate::principal::Principal;
use crate::rate::{Bucket, Decision, PerIp, Rate};

/// Every rate limit Iris applies, decided in one place: per identity
/// (requests and messages), per client address before authentication, and
/// per address for login attempts. [`LocalLimits`] counts in this
/// process; a cluster's decides for all nodes at once behind this same
/// interface. `None`: not limited (limits are off, or the identity has none).
pub trait Limits: Send + Sync {
    /// Count a request of `principal`.
    fn request<'a>(&'a self, principal: &'a Principal) -> BoxFuture<'a, Option<Decision>>;
    /// Count a message-sending operation of `principal`.
    fn message<'a>(&'a self, principal: &'a Principal) -> BoxFuture<'a, Option<Decision>>;
    /// Count a request without a credential (or a failed one) from `ip`.
    fn address(&self, ip: IpAddr) -> BoxFuture<'_, Option<Decision>>;
    /// Count a login attempt from `ip`.
    fn login(&self, ip: IpAddr) -> BoxFuture<'_, Option<Decision>>;
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

impl LocalLimits {
    fn identity(&self, principal: &Principal, messages: bool) -> Option<Decision> {
        if !self.enabled {
            return None;
        }
        principal.limits.as_ref().map(|l| {
            if messages {
                l.messages.check()
            } else {
                l.requests.check()
            }
        })
    }
}

impl Limits for LocalLimits {
    fn request<'a>(&'a self, principal: &'a Principal) -> BoxFuture<'a, Option<Decision>> {
        Box::pin(std::future::ready(self.identity(principal, false)))
    }

    fn message<'a>(&'a self, principal: &'a Principal) -> BoxFuture<'a, Option<Decision>> {
        Box::pin(std::future::ready(self.identity(principal, true)))
    }

    fn address(&self, ip: IpAddr) -> BoxFuture<'_, Option<Decision>> {
        Box::pin(std::future::ready(
            self.enabled.then(|| self.per_ip.check(ip)),
        ))
    }

    fn login(&self, ip: IpAddr) -> BoxFuture<'_, Option<Decision>> {
        Box::pin(std::future::ready(
            self.enabled.then(|| self.login.check(ip)),
        ))
    }

    fn sweep(&self) {
        self.per_ip.sweep();
        self.login.sweep();
    }
}

/// [`Limits`] for a whole cluster: every bucket lives in Redis and each
/// decision is made there atomically, on Redis's clock, so N nodes allow
/// what one would. While Redis is unreachable each node decides alone
/// with its [`LocalLimits`] (a limit then holds per node, not per
/// cluster) rather than refusing everyone or letting everyone through.
pub struct ClusterLimits {
    link: Arc<Link>,
    local: LocalLimits,
    per_ip: Rate,
    login: Rate,
}

impl ClusterLimits {
    pub fn new(link: Arc<Link>, enabled: bool, per_ip: Rate, login: Rate) -> Self {
        ClusterLimits {
            link,
            local: LocalLimits::new(enabled, per_ip, login),
            per_ip,
            login,
        }
    }

    /// Decide `bucket` (`rate`) in Redis, or with `fallback` when Redis
    /// does not answer.
    async fn decide(
        &self,
        bucket: String,
        rate: Rate,
        fallback: impl FnOnce() -> Decision,
    ) -> Decision {
        match self.link.allow(&bucket, rate.count, rate.window).await {
            Ok(a) => decision(rate, a),
            Err(e) => {
                tracing::debug!(error = %e, "rate limit decided on this node alone");
                fallback()
            }
        }
    }

    async fn identity(&self, principal: &Principal, messages: bool) -> Option<Decision> {
        if !self.local.enabled {
            return None;
        }
        let limits = principal.limits.as_ref()?;
        let (kind, bucket): (&str, &Bucket) = if messages {
            ("msg", &limits.messages)
        } else {
            ("req", &limits.requests)
        };
        Some(
            self.decide(format!("{kind}:{}", principal.id), bucket.rate(), || {
                bucket.check()
            })
            .await,
        )
    }
}

/// The headers' view of a decision made in Redis.
fn decision(rate: Rate, a: Allowance) -> Decision {
    Decision {
        allowed: a.allowed,
        limit: rate.count,
        remaining: a.remaining,
        reset: a.full_at_us.div_ceil(1_000_000),
        retry_after: if a.allowed {
            Duration::ZERO
        } else {
            a.retry_after
        },
    }
}

impl Limits for ClusterLimits {
    fn request<'a>(&'a self, principal: &'a Principal) -> BoxFuture<'a, Option<Decision>> {
        Box::pin(self.identity(principal, false))
    }

    fn message<'a>(&'a self, principal: &'a Principal) -> BoxFuture<'a, Option<Decision>> {
        Box::pin(self.identity(principal, true))
    }

    fn address(&self, ip: IpAddr) -> BoxFuture<'_, Option<Decision>> {
        Box::pin(async move {
            if !self.local.enabled {
                return None;
            }
            Some(
                self.decide(format!("ip:{ip}"), self.per_ip, || {
                    self.local.per_ip.check(ip)
                })
                .await,
            )
        })
    }

    fn login(&self, ip: IpAddr) -> BoxFuture<'_, Option<Decision>> {
        Box::pin(async move {
            if !self.local.enabled {
                return None;
            }
            Some(
                self.decide(format!("login:{ip}"), self.login, || {
                    self.local.login.check(ip)
                })
                .await,
            )
        })
    }

    fn sweep(&self) {
        self.local.sweep();
    }
}
