//! Where webhooks may go. A webhook URL is chosen by a caller, so without
//! a check Iris could be made to call its own network (server-side request
//! forgery, OWASP SSRF prevention cheat sheet): loopback, private (RFC
//! 1918, RFC 4193), shared (RFC 6598), link-local (RFC 3927 — which holds
//! the cloud metadata address 169.254.169.254) and other special addresses
//! are refused unless the host is in `webhooks.allowHosts`. The check runs
//! on the resolved addresses, at every connection (a resolver that drops
//! refused ones), so a name that resolves elsewhere later (DNS rebinding)
//! or a redirect is caught too.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Hosts that may be called even though they resolve to a refused
/// address (names or IP literals, compared case-insensitively).
#[derive(Debug, Clone, Default)]
pub struct AllowHosts(Vec<String>);

impl AllowHosts {
    pub fn new(hosts: &[String]) -> Self {
        AllowHosts(
            hosts
                .iter()
                .map(|h| {
                    h.trim_matches(|c| c == '[' || c == ']')
                        .to_ascii_lowercase()
                })
                .collect(),
        )
    }

    pub fn allows(&self, host: &str) -> bool {
        let host = host
            .trim_matches(|c| c == '[' || c == ']')
            .to_ascii_lowercase();
        self.0.contains(&host)
    }
}

/// Whether `ip` is an address no webhook may reach unless allowed.
pub fn is_refused(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => refused_v4(v4),
        IpAddr::V6(v6) => {
            // IPv4-mapped (::ffff:a.b.c.d) and IPv4-compatible (::a.b.c.d,
            // which also covers :: and ::1) addresses are their IPv4 one.
            if let Some(v4) = v6.to_ipv4() {
                return refused_v4(v4);
            }
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (first & 0xffc0) == 0xfe80 // link-local fe80::/10
                || (first & 0xffc0) == 0xfec0 // site-local fec0::/10 (deprecated)
                || first == 0x0064 && v6.segments()[1] == 0xff9b // NAT64 64:ff9b::/96
                || first == 0x2002 // 6to4, which embeds an IPv4 address
                || (first == 0x2001 && v6.segments()[1] == 0) // Teredo 2001::/32, likewise
                || (first == 0x2001 && v6.segments()[1] == 0x0db8) // documentation
        }
    }
}

fn refused_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0 // "this network"
        || (a == 100 && (64..128).contains(&b)) // shared address space, RFC 6598
        || (a == 192 && b == 0 && ip.octets()[2] == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking, RFC 2544
        || a >= 240 // reserved
}

/// Why a destination is refused, for the caller. The address a name
/// resolved to is logged, not told: it would map the internal network for
/// anyone who may create a job.
fn refusal(host: &str, ip: IpAddr) -> String {
    let literal = host
        .trim_matches(|c| c == '[' || c == ']')
        .parse::<IpAddr>()
        .is_ok();
    if !literal {
        tracing::info!(host, %ip, "webhook destination refused: an internal address");
    }
    format!(
        "`{host}` is or resolves to a loopback, private, link-local or otherwise internal address; \
         webhooks may not go there unless the host is in webhooks.allowHosts"
    )
}

/// Check a webhook URL before anything is queued: http or https, a host,
/// and (unless allowed) only public addresses once resolved. The error
/// says what is wrong.
pub async fn check_url(url: &str, allow: &AllowHosts) -> Result<Url, String> {
    let parsed = Url::parse(url).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!(
            "the scheme must be http or https, not `{}`",
            parsed.scheme()
        ));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("credentials in the URL are not allowed; use headers".into());
    }
    let host = parsed
        .host_str()
        .ok_or_else(|| "the URL has no host".to_owned())?
        .to_owned();
    if allow.allows(&host) {
        return Ok(parsed);
    }
    let port = parsed.port_or_known_default().unwrap_or(80);
    let bare = host.trim_matches(|c| c == '[' || c == ']');
    let addrs: Vec<SocketAddr> = match bare.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        // A resolver that does not answer must not hold the caller.
        Err(_) => tokio::time::timeout(
            std::time::Duration::from_secs(3),
            tokio::net::lookup_host((bare, port)),
        )
        .await
        .map_err(|_| format!("cannot resolve `{host}`: no answer within 3 s"))?
        .map_err(|e| format!("cannot resolve `{host}`: {e}"))?
        .collect(),
    };
    if addrs.is_empty() {
        return Err(format!("`{host}` resolves to no address"));
    }
    if let Some(bad) = addrs.iter().find(|a| is_refused(a.ip())) {
        return Err(refusal(&host, bad.ip()));
    }
    Ok(parsed)
}

/// The resolver of the webhook client: the system's, minus refused
/// addresses for hosts not allowed.
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    pub allow: Arc<AllowHosts>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        let allowed = self.allow.allows(&host);
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let kept: Vec<SocketAddr> = found
                .iter()
                .copied()
                .filter(|a| allowed || !is_refused(a.ip()))
                .collect();
            if kept.is_empty() {
                let ip = found
                    .first()
                    .map(|a| a.ip())
                    .unwrap_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED));
                return Err(refusal(&host, ip).into());
            }
            let addrs: Addrs = Box::new(kept.into_iter());
            Ok(addrs)
        })
    }
}

/// Redirects: at most three, to the same host only, never to a refused IP
/// literal (a name is checked by the resolver when it is connected to).
pub fn redirect_policy(allow: Arc<AllowHosts>) -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() >= 3 {
            return attempt.error("more than 3 redirects");
        }
        let first_host = attempt
            .previous()
            .first()
            .and_then(|u| u.host_str())
            .map(str::to_ascii_lowercase);
        let host = attempt.url().host_str().map(str::to_ascii_lowercase);
        if host != first_host {
            return attempt.error("a redirect to another host is not followed");
        }
        if let Some(h) = &host
            && !allow.allows(h)
            && h.trim_matches(|c| c == '[' || c == ']')
                .parse::<IpAddr>()
                .is_ok_and(is_refused)
        {
            return attempt.error("a redirect to an internal address is not followed");
        }
        attempt.follow()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_refused() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00:ec2::254",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::127.0.0.1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "::",
        ] {
            assert!(is_refused(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["93.184.215.14", "1.1.1.1", "2606:4700:4700::1111"] {
            assert!(!is_refused(ip.parse().unwrap()), "{ip}");
        }
    }

    #[tokio::test]
    async fn urls_are_checked_before_use() {
        let none = AllowHosts::default();
        assert!(
            check_url("ftp://example.com/x", &none)
                .await
                .unwrap_err()
                .contains("scheme")
        );
        assert!(check_url("not a url", &none).await.is_err());
        assert!(
            check_url("http://127.0.0.1:9/h", &none)
                .await
                .unwrap_err()
                .contains("127.0.0.1")
        );
        assert!(check_url("http://[::1]:9/h", &none).await.is_err());
        assert!(
            check_url("http://169.254.169.254/latest", &none)
                .await
                .is_err()
        );
        assert!(
            check_url("http://u:p@example.com/", &none)
                .await
                .unwrap_err()
                .contains("credentials")
        );
        // A name that resolves to loopback.
        assert!(
            check_url("http://localhost:9/h", &none)
                .await
                .unwrap_err()
                .contains("localhost")
        );
        let loopback = AllowHosts::new(&["127.0.0.1".into(), "LOCALHOST".into()]);
        assert!(check_url("http://127.0.0.1:9/h", &loopback).await.is_ok());
        assert!(check_url("http://localhost:9/h", &loopback).await.is_ok());
    }

    #[tokio::test]
    async fn the_resolver_drops_refused_addresses() {
        let r = GuardedResolver {
            allow: Arc::new(AllowHosts::default()),
        };
        let name: Name = "localhost".parse().unwrap();
        let err = r.resolve(name).await.err().expect("refused");
        assert!(err.to_string().contains("allowHosts"));
        let r = GuardedResolver {
            allow: Arc::new(AllowHosts::new(&["localhost".into()])),
        };
        let name: Name = "localhost".parse().unwrap();
        assert!(r.resolve(name).await.is_ok());
    }
}
