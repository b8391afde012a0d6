//! Network values parsed at load time: CORS origins and trusted proxy networks.

use std::{fmt, net::IpAddr};

use axum::http::HeaderValue;
use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One browser origin allowed by CORS: exactly `scheme://host[:port]`, http(s), no wildcard.
#[derive(Clone, PartialEq, Eq)]
pub struct Origin(HeaderValue);

impl Origin {
    pub fn parse(o: &str) -> Result<Origin, String> {
        if o.contains('*') {
            return Err(format!(
                "{o:?}: wildcards are not allowed, list each origin"
            ));
        }
        let url = url::Url::parse(o).map_err(|_| format!("{o:?} is not an origin URL"))?;
        let origin = url.origin();
        if !origin.is_tuple() || !matches!(url.scheme(), "http" | "https") {
            return Err(format!("{o:?} is not an http(s) origin"));
        }
        let text = origin.ascii_serialization();
        if text != o.trim_end_matches('/') {
            return Err(format!(
                "{o:?} must be just scheme://host[:port], e.g. {text:?}"
            ));
        }
        HeaderValue::from_str(&text)
            .map(Origin)
            .map_err(|_| format!("{o:?} is not a valid origin"))
    }

    /// The origin as the `Origin` request header carries it.
    pub fn header_value(&self) -> &HeaderValue {
        &self.0
    }
}

impl std::str::FromStr for Origin {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Origin::parse(s)
    }
}

impl fmt::Debug for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl Serialize for Origin {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.to_str().unwrap_or_default())
    }
}

impl<'de> Deserialize<'de> for Origin {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Origin::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// A peer network whose forwarding headers are believed: an IP address or a CIDR block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrustedProxy(IpNet);

impl TrustedProxy {
    pub fn parse(s: &str) -> Result<TrustedProxy, String> {
        let s = s.trim();
        s.parse::<IpNet>()
            .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
            .map(|n| TrustedProxy(n.trunc()))
            .map_err(|_| format!("{s:?} is not an IP address or CIDR block"))
    }

    pub fn contains(&self, ip: &IpAddr) -> bool {
        self.0.contains(ip)
    }
}

impl std::str::FromStr for TrustedProxy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        TrustedProxy::parse(s)
    }
}

impl Serialize for TrustedProxy {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for TrustedProxy {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        TrustedProxy::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_show_and_serialise_as_configured() {
        let o: Origin = "https://app.example.com".parse().unwrap();
        assert_eq!(format!("{o:?}"), "\"https://app.example.com\"");
        assert_eq!(
            serde_json::to_string(&o).unwrap(),
            "\"https://app.example.com\""
        );
        let p: TrustedProxy = "10.0.0.0/8".parse().unwrap();
        assert_eq!(serde_json::to_string(&p).unwrap(), "\"10.0.0.0/8\"");
    }

    #[test]
    fn origins_must_be_exact() {
        assert!(Origin::parse("https://app.example.com").is_ok());
        assert_eq!(
            Origin::parse("http://localhost:3000/")
                .unwrap()
                .header_value(),
            "http://localhost:3000"
        );
        for bad in [
            "*",
            "https://app.example.com/path",
            "app.example.com",
            "file:///x",
            "https://*.example.com",
        ] {
            assert!(Origin::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn proxies_are_addresses_or_networks() {
        let net = TrustedProxy::parse("10.1.2.3/8").unwrap();
        assert!(net.contains(&"10.200.0.1".parse().unwrap()));
        let one = TrustedProxy::parse(" 192.168.1.1 ").unwrap();
        assert!(one.contains(&"192.168.1.1".parse().unwrap()));
        assert!(!one.contains(&"192.168.1.2".parse().unwrap()));
        assert!(TrustedProxy::parse("10.0.0.0/33").is_err());
        assert!(TrustedProxy::parse("proxy.local").is_err());
    }
}
