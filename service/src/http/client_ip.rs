//! The client's IP address: the TCP peer, unless the peer is a trusted proxy, in which case
//! the nearest untrusted hop named in `Forwarded` (RFC 7239) or `X-Forwarded-For`.

use std::net::{IpAddr, Ipv6Addr};

use axum::http::{HeaderMap, HeaderName, header};

use crate::config::TrustedProxy;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// Hops looked at, at most (a longer chain is cut; the nearest hops are the trusted ones).
const MAX_HOPS: usize = 32;

/// The client address for a request that arrived from `peer`.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[TrustedProxy]) -> IpAddr {
    let peer = peer.to_canonical();
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if trusted.is_empty() || !is_trusted(&peer) {
        return peer;
    }
    let hops = if headers.contains_key(header::FORWARDED) {
        forwarded_hops(headers)
    } else {
        x_forwarded_for_hops(headers)
    };
    // Walk from the nearest hop outwards: every trusted proxy appended the address it saw.
    let mut candidate = peer;
    for hop in hops.iter().rev().take(MAX_HOPS) {
        match hop {
            Some(ip) => {
                candidate = ip.to_canonical();
                if !is_trusted(&candidate) {
                    return candidate;
                }
            }
            // An unparseable or obfuscated hop: what is left of it cannot be trusted.
            None => return candidate,
        }
    }
    candidate
}

fn x_forwarded_for_hops(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("!").split(','))
        .map(|s| parse_node(s.trim()))
        .collect()
}

fn forwarded_hops(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    headers
        .get_all(header::FORWARDED)
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("for=!").split(','))
        .map(|element| {
            element
                .split(';')
                .filter_map(|pair| pair.trim().split_once('='))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("for"))
                .and_then(|(_, v)| parse_node(v.trim().trim_matches('"')))
        })
        .collect()
}

/// `1.2.3.4`, `1.2.3.4:80`, `[::1]`, `[::1]:80` or a bare IPv6 address.
fn parse_node(s: &str) -> Option<IpAddr> {
    if let Some(rest) = s.strip_prefix('[') {
        let (addr, _) = rest.split_once(']')?;
        return addr.parse::<Ipv6Addr>().ok().map(IpAddr::V6);
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    let (addr, port) = s.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    addr.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn parse_proxies(list: &[&str]) -> Result<Vec<TrustedProxy>, String> {
        list.iter().map(|s| s.parse()).collect()
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn untrusted_peers_headers_are_ignored() {
        let h = headers(&[("x-forwarded-for", "9.9.9.9")]);
        assert_eq!(client_ip(ip("1.2.3.4"), &h, &[]), ip("1.2.3.4"));
        let trusted = parse_proxies(&["10.0.0.0/8"]).unwrap();
        assert_eq!(client_ip(ip("1.2.3.4"), &h, &trusted), ip("1.2.3.4"));
    }

    #[test]
    fn trusted_proxy_chain_is_walked_from_the_right() {
        let trusted = parse_proxies(&["10.0.0.0/8", "192.168.1.1"]).unwrap();
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 7.7.7.7, 10.1.1.1")]);
        assert_eq!(client_ip(ip("192.168.1.1"), &h, &trusted), ip("7.7.7.7"));
        // Split over several header lines.
        let h = headers(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-for", "7.7.7.7"),
        ]);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &trusted), ip("7.7.7.7"));
        // Garbage left of a trusted hop stops the walk at the last good address.
        let h = headers(&[("x-forwarded-for", "not-an-ip, 10.2.2.2")]);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &trusted), ip("10.2.2.2"));
        // No header: the proxy itself.
        assert_eq!(
            client_ip(ip("10.0.0.1"), &HeaderMap::new(), &trusted),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn forwarded_header_wins_and_is_parsed() {
        let trusted = parse_proxies(&["127.0.0.1"]).unwrap();
        let h = headers(&[
            (
                "forwarded",
                r#"for=192.0.2.60;proto=http, for="[2001:db8::1]:4711""#,
            ),
            ("x-forwarded-for", "5.5.5.5"),
        ]);
        assert_eq!(client_ip(ip("127.0.0.1"), &h, &trusted), ip("2001:db8::1"));
        let h = headers(&[("forwarded", "for=192.0.2.43:8080")]);
        assert_eq!(client_ip(ip("127.0.0.1"), &h, &trusted), ip("192.0.2.43"));
        let h = headers(&[("forwarded", "for=_hidden, for=unknown")]);
        assert_eq!(client_ip(ip("127.0.0.1"), &h, &trusted), ip("127.0.0.1"));
    }

    #[test]
    fn mapped_ipv4_is_canonical_and_bad_proxies_are_reported() {
        let trusted = parse_proxies(&["127.0.0.1"]).unwrap();
        let h = headers(&[("x-forwarded-for", "8.8.8.8")]);
        assert_eq!(
            client_ip(ip("::ffff:127.0.0.1"), &h, &trusted),
            ip("8.8.8.8")
        );
        assert!(parse_proxies(&["10.0.0.0/33"]).is_err());
        assert!(parse_proxies(&["proxy.local"]).is_err());
    }
}
