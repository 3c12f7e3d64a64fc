//! Who a peer is (RFC 5355 §2: what authorisation is decided on): the names its verified TLS
//! certificate gives it ([`Identity`]), and who an access rule or an ENRP allowlist entry admits
//! ([`Principal`]): a source subnet, or a certificate name (`identity:NAME`).

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use crate::core::subnet::Subnet;

/// The names of a peer's verified certificate (common names, then subject alternative names),
/// as the driver read them when the TLS handshake ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    names: Box<[Box<str>]>,
    key: u64,
}

impl Identity {
    /// The identity of the names `names`.
    pub fn new(names: impl IntoIterator<Item = String>) -> Self {
        let names: Box<[Box<str>]> = names.into_iter().map(String::into_boxed_str).collect();
        let primary = names.first().map_or("", |n| n);
        let key = xxhash_rust::xxh3::xxh3_64(primary.to_ascii_lowercase().as_bytes()).max(1);
        Self { names, key }
    }

    /// The first name: what logs show and what a PE ID is bound to.
    pub fn primary(&self) -> &str {
        self.names.first().map_or("", |n| n)
    }

    /// Whether one of the names matches `pattern`.
    pub fn matches(&self, pattern: &NamePattern) -> bool {
        self.names.iter().any(|name| pattern.matches(name))
    }

    /// A 64-bit digest of the primary name (never 0): the binding a PE ID registered over TLS
    /// keeps in the handlespace.
    pub fn key(&self) -> u64 {
        self.key
    }
}

/// A certificate name to match: exact (without regard to ASCII case), or `*.example.net` for any
/// one left-most label (`pe1.example.net`, not `a.b.example.net`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamePattern(Box<str>);

impl NamePattern {
    /// Whether `name` matches.
    pub fn matches(&self, name: &str) -> bool {
        match self.0.strip_prefix("*.") {
            Some(suffix) => name.split_once('.').is_some_and(|(label, rest)| {
                !label.is_empty() && rest.eq_ignore_ascii_case(suffix)
            }),
            None => self.0.eq_ignore_ascii_case(name),
        }
    }
}

impl FromStr for NamePattern {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let wildcard_elsewhere = s.strip_prefix("*.").unwrap_or(s).contains('*');
        if s.is_empty() || s.contains(char::is_whitespace) || wildcard_elsewhere || s == "*." {
            return Err(format!(
                "`{s}` is no certificate name pattern (a name such as pe7.example.net, or \
                 *.example.net for one left-most label)"
            ));
        }
        Ok(Self(s.into()))
    }
}

impl fmt::Display for NamePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whom a rule admits: peers from a subnet (any TLS or not), or peers whose verified certificate
/// has a matching name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    /// Peers with an address in the subnet (`any` for everyone).
    Subnet(Subnet),
    /// Peers over TLS whose certificate has a name matching (`identity:NAME`).
    Name(NamePattern),
}

impl Principal {
    /// Everyone.
    pub const ANY: Self = Self::Subnet(Subnet::ANY);

    /// Whether a peer at `addresses` (any of a multi-homed peer's) with `identity` is admitted.
    pub fn admits(&self, addresses: &[SocketAddr], identity: Option<&Identity>) -> bool {
        match self {
            Self::Subnet(net) => addresses.iter().any(|a| net.contains(a.ip())),
            Self::Name(pattern) => identity.is_some_and(|i| i.matches(pattern)),
        }
    }
}

impl FromStr for Principal {
    type Err = String;

    /// `identity:NAME` for a certificate name, else a subnet (`10.0.0.0/8`, `fd00::1`, `any`).
    fn from_str(s: &str) -> Result<Self, String> {
        match s.strip_prefix("identity:") {
            Some(name) => name.parse().map(Self::Name),
            None => s.parse().map(Self::Subnet),
        }
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Subnet(net) => write!(f, "{net}"),
            Self::Name(pattern) => write!(f, "identity:{pattern}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(s: &str) -> NamePattern {
        s.parse().unwrap()
    }

    #[test]
    fn patterns_match_names_and_one_wildcard_label() {
        assert!(pattern("*.example.net").matches("a.example.net"));
        assert!(!pattern("*.example.net").matches("a.b.example.net"));
        assert!(!pattern("*.example.net").matches(".example.net"));
        assert!(!pattern("*.example.net").matches("example.net"));
        assert!(pattern("PE-1").matches("pe-1"));
        assert!(!pattern("pe-1").matches("pe-10"));
        for bad in ["", "a b", "pe*", "*", "*.", "a.*.net"] {
            assert!(bad.parse::<NamePattern>().is_err(), "{bad}");
        }
    }

    #[test]
    fn principals_admit_by_subnet_or_by_certificate_name() {
        let at = |ip: &str| vec![SocketAddr::new(ip.parse().unwrap(), 1)];
        let pe7 = Identity::new(["pe-7".to_owned(), "pe7.example.net".to_owned()]);
        let by_name: Principal = "identity:*.example.net".parse().unwrap();
        assert!(by_name.admits(&at("10.0.0.1"), Some(&pe7)));
        assert!(!by_name.admits(&at("10.0.0.1"), None), "no TLS, no name");
        let other = Identity::new(["pe-8".to_owned()]);
        assert!(!by_name.admits(&at("10.0.0.1"), Some(&other)));
        let by_subnet: Principal = "10.0.0.0/8".parse().unwrap();
        assert!(by_subnet.admits(&at("10.0.0.1"), None));
        assert!(!by_subnet.admits(&at("11.0.0.1"), Some(&pe7)));
        for text in [
            "identity:pe-7",
            "identity:*.example.net",
            "10.0.0.0/8",
            "any",
        ] {
            assert_eq!(text.parse::<Principal>().unwrap().to_string(), text);
        }
        assert!("identity:".parse::<Principal>().is_err());
        assert_eq!(pe7.primary(), "pe-7");
        assert_eq!(pe7.key(), Identity::new(["PE-7".to_owned()]).key());
        assert_ne!(pe7.key(), other.key());
    }
}
