//! Rate limits (seed 002): token buckets (governor's GCRA) per identity and
//! per client IP, with what the `X-RateLimit-*` headers report.

use std::fmt;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::str::FromStr;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

/// `N` requests per `window`, written `100/min`, `5/15m`, `10/s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rate {
    pub count: u32,
    pub window: Duration,
}

impl Rate {
    pub const fn new(count: u32, window_secs: u64) -> Self {
        Rate {
            count,
            window: Duration::from_secs(window_secs),
        }
    }

    /// A bucket of `count` refilled evenly over `window`.
    fn quota(self) -> Quota {
        let count = NonZeroU32::new(self.count.max(1)).unwrap_or(NonZeroU32::MIN);
        let per_cell = (self.window / count.get()).max(Duration::from_nanos(1));
        Quota::with_period(per_cell)
            .unwrap_or_else(|| Quota::per_second(count))
            .allow_burst(count)
    }
}

impl FromStr for Rate {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("`{s}` is not a rate like `100/min`, `5/15m` or `10/s`");
        let (n, w) = s.trim().split_once('/').ok_or_else(bad)?;
        let count: u32 = n.trim().parse().map_err(|_| bad())?;
        if count == 0 {
            return Err(format!("`{s}`: the count must be at least 1"));
        }
        if w.trim().is_empty() {
            return Err(bad());
        }
        let window = parse_duration(
            if w.trim().starts_with(|c: char| c.is_ascii_digit()) {
                w.trim().to_owned()
            } else {
                format!("1{}", w.trim())
            }
            .as_str(),
        )
        .map_err(|_| bad())?;
        Ok(Rate { count, window })
    }
}

/// Longest duration taken (100 years): a key's expiry or a rotation's
/// grace beyond it would overflow a timestamp, and means "never" anyway.
const LONGEST_SECS: u64 = 100 * 365 * 86_400;

/// `30d`, `12h`, `15m`/`15min`, `90s`, or plain seconds; at most 100 years.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("`{s}` is not a duration like `30d`, `12h`, `15min` or `90s`");
    let s = s.trim();
    let digits = s.chars().take_while(char::is_ascii_digit).count();
    let n: u64 = s[..digits].parse().map_err(|_| bad())?;
    let unit = match &s[digits..] {
        "" | "s" | "sec" | "second" | "seconds" => 1,
        "m" | "min" | "minute" | "minutes" => 60,
        "h" | "hour" | "hours" => 3600,
        "d" | "day" | "days" => 86_400,
        _ => return Err(bad()),
    };
    if n == 0 {
        return Err(bad());
    }
    match n.checked_mul(unit) {
        Some(secs) if secs <= LONGEST_SECS => Ok(Duration::from_secs(secs)),
        _ => Err(format!(
            "`{s}` is longer than 100 years ({}d)",
            LONGEST_SECS / 86_400
        )),
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.window.as_secs();
        let (n, unit) = if s.is_multiple_of(86_400) {
            (s / 86_400, "d")
        } else if s.is_multiple_of(3600) {
            (s / 3600, "h")
        } else if s.is_multiple_of(60) {
            (s / 60, "min")
        } else {
            (s, "s")
        };
        if n == 1 {
            write!(f, "{}/{unit}", self.count)
        } else {
            write!(f, "{}/{n}{unit}", self.count)
        }
    }
}

impl serde::Serialize for Rate {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Rate {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One rate-limiting decision, as the response headers tell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u32,
    pub remaining: u32,
    /// Unix seconds when the bucket is full again.
    pub reset: u64,
    /// When refused: how long until one more request is allowed.
    pub retry_after: Duration,
}

type Direct = RateLimiter<NotKeyed, InMemoryState, DefaultClock, StateInformationMiddleware>;
type Keyed =
    RateLimiter<IpAddr, DefaultKeyedStateStore<IpAddr>, DefaultClock, StateInformationMiddleware>;

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

fn decide(
    rate: Rate,
    outcome: Result<
        governor::middleware::StateSnapshot,
        governor::NotUntil<<DefaultClock as Clock>::Instant>,
    >,
    clock: &DefaultClock,
) -> Decision {
    let per_cell = rate.quota().replenish_interval();
    match outcome {
        Ok(snap) => {
            let remaining = snap.remaining_burst_capacity();
            let refill = per_cell * (rate.count.saturating_sub(remaining));
            Decision {
                allowed: true,
                limit: rate.count,
                remaining,
                reset: unix_now() + refill.as_secs_f64().ceil() as u64,
                retry_after: Duration::ZERO,
            }
        }
        Err(not_until) => {
            let wait = not_until.wait_time_from(clock.now());
            Decision {
                allowed: false,
                limit: rate.count,
                remaining: 0,
                reset: unix_now() + (per_cell * rate.count).as_secs_f64().ceil() as u64,
                retry_after: wait,
            }
        }
    }
}

/// A single bucket.
#[derive(Debug)]
pub struct Bucket {
    rate: Rate,
    limiter: Direct,
}

impl Bucket {
    pub fn new(rate: Rate) -> Self {
        Bucket {
            rate,
            limiter: RateLimiter::direct(rate.quota()).with_middleware(),
        }
    }
    pub fn check(&self) -> Decision {
        decide(self.rate, self.limiter.check(), self.limiter.clock())
    }
    pub fn rate(&self) -> Rate {
        self.rate
    }
}

/// One bucket per client address.
#[derive(Debug)]
pub struct PerIp {
    rate: Rate,
    limiter: Keyed,
}

impl PerIp {
    pub fn new(rate: Rate) -> Self {
        PerIp {
            rate,
            limiter: RateLimiter::keyed(rate.quota()).with_middleware(),
        }
    }
    pub fn check(&self, ip: IpAddr) -> Decision {
        decide(self.rate, self.limiter.check_key(&ip), self.limiter.clock())
    }
    /// Forget addresses whose buckets are full again (bounds memory).
    pub fn sweep(&self) {
        self.limiter.retain_recent();
    }
}

/// The buckets of one identity (a key or a user): all requests, and the
/// tighter one for message-sending operations.
#[derive(Debug)]
pub struct IdentityLimits {
    pub requests: Bucket,
    pub messages: Bucket,
}

impl IdentityLimits {
    pub fn new(requests: Rate, messages: Rate) -> Self {
        IdentityLimits {
            requests: Bucket::new(requests),
            messages: Bucket::new(messages),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_rates() {
        assert_eq!("100/min".parse::<Rate>().unwrap(), Rate::new(100, 60));
        assert_eq!("5/15m".parse::<Rate>().unwrap(), Rate::new(5, 900));
        assert_eq!("10/s".parse::<Rate>().unwrap(), Rate::new(10, 1));
        assert_eq!("2/day".parse::<Rate>().unwrap(), Rate::new(2, 86_400));
        assert_eq!(
            parse_duration("30d").unwrap(),
            Duration::from_secs(30 * 86_400)
        );
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert!(parse_duration("soon").is_err() && parse_duration("0h").is_err());
        // Longer than 100 years (or than u64 seconds): refused, not wrapped.
        assert!(parse_duration("36500d").is_ok());
        assert!(parse_duration("36501d").is_err());
        assert!(parse_duration("106751991167d").is_err());
        assert!(parse_duration("999999999999d").is_err());
        for bad in ["", "100", "0/min", "x/min", "10/fortnight", "10/0m"] {
            assert!(bad.parse::<Rate>().is_err(), "{bad}");
        }
        assert_eq!(Rate::new(5, 900).to_string(), "5/15min");
        assert_eq!(Rate::new(100, 60).to_string(), "100/min");
    }

    #[test]
    fn a_bucket_counts_down_then_refuses_with_a_wait() {
        let b = Bucket::new(Rate::new(3, 60));
        let d: Vec<Decision> = (0..4).map(|_| b.check()).collect();
        assert_eq!(
            d.iter()
                .map(|d| (d.allowed, d.remaining))
                .collect::<Vec<_>>(),
            [(true, 2), (true, 1), (true, 0), (false, 0)]
        );
        assert!(d[3].retry_after > Duration::from_secs(10), "{:?}", d[3]);
        assert!(d[3].retry_after <= Duration::from_secs(20), "{:?}", d[3]);
        assert!(d[2].reset >= unix_now() + 59);
        let ip = PerIp::new(Rate::new(1, 60));
        assert!(ip.check("10.0.0.1".parse().unwrap()).allowed);
        assert!(!ip.check("10.0.0.1".parse().unwrap()).allowed);
        assert!(ip.check("10.0.0.2".parse().unwrap()).allowed);
    }
}
