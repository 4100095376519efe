//! Which URLs a user may register as a webhook: the service makes the
//! request, so a URL that points inside the network would let any user
//! reach what only the service can (server-side request forgery).
//!
//! - `https://` only, or `http://` to a `host:port` the operator allows
//!   (the caller's list: tests' and local receivers);
//! - no credentials in the URL;
//! - every address the host resolves to must be public: loopback,
//!   private, link-local, shared (CGNAT), unspecified, broadcast,
//!   multicast, documentation and unique-local ranges are refused, IPv4
//!   mapped into IPv6 included. The check is made after DNS resolution,
//!   and the addresses it vetted are returned so that the delivery
//!   connects to those and not to what a second lookup might answer
//!   (DNS rebinding). Redirects are not followed by deliveries.
//!
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refused {
    #[error("not a URL")]
    Malformed,
    #[error("a webhook URL is https:// (http:// only to addresses the operator allows)")]
    Scheme,
    #[error("a webhook URL may not carry credentials")]
    Credentials,
    #[error("the host does not resolve")]
    Unresolved,
    #[error("the host resolves to an address inside the network ({0})")]
    Internal(IpAddr),
}

impl Refused {
    /// What a user is told: a host that resolves inside the network and
    /// one that does not resolve read the same, so that answers cannot
    /// map which internal names exist.
    pub fn public_reason(&self) -> &'static str {
        match self {
            Self::Malformed => "not a URL",
            Self::Scheme => {
                "a webhook URL is https:// (http:// only to addresses the operator allows)"
            }
            Self::Credentials => "a webhook URL may not carry credentials",
            Self::Unresolved | Self::Internal(_) => {
                "the URL's host must resolve, to public addresses only"
            }
        }
    }
}

/// Whether `ip` is on the public internet.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(v6),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        // 0.0.0.0/8 "this network", 100.64.0.0/10 shared (CGNAT),
        // 192.0.0.0/24 protocol assignments, 198.18.0.0/15 benchmarking,
        // 240.0.0.0/4 reserved.
        || a == 0
        || (a == 100 && (64..128).contains(&b))
        || (a == 192 && b == 0 && c == 0)
        || (a == 198 && (18..20).contains(&b))
        || a >= 240)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        // fc00::/7 unique local, fe80::/10 link-local, 2001:db8::/32
        // documentation, 64:ff9b::/96 NAT64 (may reach IPv4 inside).
        || (first & 0xfe00) == 0xfc00
        || (first & 0xffc0) == 0xfe80
        || (first == 0x2001 && ip.segments()[1] == 0x0db8)
        || (first == 0x0064 && ip.segments()[1] == 0xff9b))
}

/// How long a host's lookup may take.
const LOOKUP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Checks `text` and resolves its host; the addresses a delivery may
/// connect to. `http_allowed` are the `host:port`s that may use plain
/// http, internal or not (tests' receivers on loopback).
pub async fn check(text: &str, http_allowed: &[String]) -> Result<Vec<SocketAddr>, Refused> {
    let url = url::Url::parse(text).map_err(|_| Refused::Malformed)?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Refused::Credentials);
    }
    let host = url.host_str().ok_or(Refused::Malformed)?;
    let port = url.port_or_known_default().ok_or(Refused::Malformed)?;
    let authority = format!("{host}:{port}");
    let allowed_http = http_allowed.contains(&authority);
    match url.scheme() {
        "https" => {}
        "http" if allowed_http => {}
        _ => return Err(Refused::Scheme),
    }
    // `[::1]` is kept bracketed by the URL; a lookup wants it bare.
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    // A resolver that does not answer must not hold a request for ever.
    let lookup = tokio::time::timeout(LOOKUP_TIMEOUT, tokio::net::lookup_host((bare, port)));
    let addresses: Vec<SocketAddr> = lookup
        .await
        .map_err(|_| Refused::Unresolved)?
        .map_err(|_| Refused::Unresolved)?
        .collect();
    if addresses.is_empty() {
        return Err(Refused::Unresolved);
    }
    if !allowed_http && let Some(inside) = addresses.iter().find(|a| !is_public(a.ip())) {
        return Err(Refused::Internal(inside.ip()));
    }
    Ok(addresses)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_are_public() {
        for inside in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "0.1.2.3",
            "255.255.255.255",
            "224.0.0.1",
            "192.0.2.1",
            "198.18.0.1",
            "240.0.0.1",
            "::1",
            "::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "2001:db8::1",
            "64:ff9b::a00:1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "ff02::1",
        ] {
            assert!(!is_public(inside.parse().unwrap()), "{inside}");
        }
        for outside in [
            "93.184.215.14",
            "1.1.1.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(is_public(outside.parse().unwrap()), "{outside}");
        }
    }

    #[tokio::test]
    async fn internal_plain_and_credentialed_urls_are_refused() {
        assert_eq!(check("not a url", &[]).await, Err(Refused::Malformed));
        assert_eq!(
            check("ftp://example.com/x", &[]).await,
            Err(Refused::Scheme)
        );
        assert_eq!(
            check("http://example.com/x", &[]).await,
            Err(Refused::Scheme)
        );
        assert_eq!(
            check("https://user:pw@example.com/", &[]).await,
            Err(Refused::Credentials)
        );
        // Resolved first: names and literals that land inside are refused.
        for inside in [
            "https://127.0.0.1/hook",
            "https://localhost:8443/hook",
            "https://[::1]/hook",
            "https://169.254.169.254/latest/meta-data",
            "https://10.0.0.5/hook",
            "https://[::ffff:192.168.0.1]/hook",
        ] {
            assert!(
                matches!(check(inside, &[]).await, Err(Refused::Internal(_))),
                "{inside}"
            );
        }
    }

    #[tokio::test]
    async fn an_allowed_address_may_take_plain_http() {
        let allowed = vec!["127.0.0.1:9999".to_owned()];
        let addresses = check("http://127.0.0.1:9999/hook", &allowed).await.unwrap();
        assert_eq!(addresses, ["127.0.0.1:9999".parse().unwrap()]);
        assert_eq!(
            check("http://127.0.0.1:9998/hook", &allowed).await,
            Err(Refused::Scheme),
            "only the allowed port"
        );
    }
}
