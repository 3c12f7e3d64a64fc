//! The ENRP peer allowlist (`enrp.allowed_peers`; RFC 5355 §2.5: a malicious ENRP server joining
//! the group of legitimate ones): which PR IDs may join the operating scope, each optionally
//! bound to the addresses it may speak from or, over TLS, to a name of its certificate
//! (`42@identity:pr42.example.net`).

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use rserpool_handlespace::PrId;

use crate::core::identity::{Identity, Principal};

/// One admitted peer: a PR ID, and the subnet it must speak from or the certificate name it
/// must have (anyone when `None`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllowedPeer {
    /// The peer's PR ID.
    pub id: PrId,
    /// The network its associations and presences must come from, or its certificate name.
    pub from: Option<Principal>,
}

impl AllowedPeer {
    /// Whether `id`, speaking from one of `addresses` (any of a multi-homed peer's) with
    /// `identity`, is this entry.
    pub fn admits(&self, id: PrId, addresses: &[SocketAddr], identity: Option<&Identity>) -> bool {
        self.id == id
            && self
                .from
                .as_ref()
                .is_none_or(|from| from.admits(addresses, identity))
    }
}

/// Whether the list admits `id` from `addresses`: an empty list admits everyone (RSPLIB's open
/// scope).
pub fn admits(
    list: &[AllowedPeer],
    id: PrId,
    addresses: &[SocketAddr],
    identity: Option<&Identity>,
) -> bool {
    list.is_empty() || list.iter().any(|p| p.admits(id, addresses, identity))
}

/// Why an allowlist entry was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllowedPeerError(String);

impl fmt::Display for AllowedPeerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (expected a PR ID, optionally with the subnet it speaks from or its TLS \
             certificate name: \"0x2a\", \"42\", \"42@10.0.0.7\", \"42@10.0.0.0/24\", \
             \"42@fd00::/64\", \"42@identity:pr42.example.net\")",
            self.0
        )
    }
}

impl std::error::Error for AllowedPeerError {}

impl FromStr for AllowedPeer {
    type Err = AllowedPeerError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |why: &str| AllowedPeerError(format!("bad ENRP peer `{s}`: {why}"));
        let (id, from) = match s.split_once('@') {
            Some((id, from)) => (id, Some(from)),
            None => (s, None),
        };
        let id = id.trim();
        let id = match id.strip_prefix("0x").or_else(|| id.strip_prefix("0X")) {
            Some(hex) => u64::from_str_radix(hex, 16),
            None => id.parse(),
        }
        .map_err(|_| err("the PR ID is not a number"))?;
        if id == 0 {
            return Err(err("PR ID 0 is no PR's"));
        }
        let from = match from {
            None => None,
            Some(from) => Some(from.parse::<Principal>().map_err(|why| err(&why))?),
        };
        Ok(Self { id: PrId(id), from })
    }
}

impl fmt::Display for AllowedPeer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.id.0)?;
        match &self.from {
            None => Ok(()),
            Some(from) => write!(f, "@{from}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ip: &str) -> Vec<SocketAddr> {
        vec![SocketAddr::new(ip.parse().unwrap(), 9901)]
    }

    #[test]
    fn entries_parse_print_and_round_trip() {
        for (text, printed) in [
            ("42", "0x2a"),
            ("0x2A", "0x2a"),
            ("42@10.0.0.7", "0x2a@10.0.0.7"),
            ("42@10.0.0.0/24", "0x2a@10.0.0.0/24"),
            ("42@[fd00::1]", "0x2a@fd00::1"),
            ("42@fd00::/64", "0x2a@fd00::/64"),
            (
                "42@identity:pr42.example.net",
                "0x2a@identity:pr42.example.net",
            ),
        ] {
            let peer: AllowedPeer = text.parse().unwrap();
            assert_eq!(peer.to_string(), printed);
            assert_eq!(printed.parse::<AllowedPeer>().unwrap(), peer);
        }
        for bad in [
            "",
            "0",
            "x",
            "42@",
            "42@10.0.0.300",
            "42@10.0.0.0/33",
            "42@::/129",
            "42@identity:",
        ] {
            let e = bad.parse::<AllowedPeer>().unwrap_err().to_string();
            assert!(e.contains("expected a PR ID"), "{bad}: {e}");
        }
    }

    #[test]
    fn an_entry_bound_to_a_certificate_name_admits_that_name_only() {
        let entry: AllowedPeer = "7@identity:pr7.example.net".parse().unwrap();
        let pr7 = Identity::new(["pr7.example.net".to_owned()]);
        let pr8 = Identity::new(["pr8.example.net".to_owned()]);
        assert!(entry.admits(PrId(7), &at("10.0.0.1"), Some(&pr7)));
        assert!(
            !entry.admits(PrId(7), &at("10.0.0.1"), Some(&pr8)),
            "another name"
        );
        assert!(!entry.admits(PrId(7), &at("10.0.0.1"), None), "no TLS");
        assert!(
            !entry.admits(PrId(8), &at("10.0.0.1"), Some(&pr7)),
            "another ID"
        );
    }

    #[test]
    fn an_entry_admits_its_id_from_its_subnet_only() {
        let list: Vec<AllowedPeer> = ["7@10.0.0.0/24", "8"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert!(admits(&list, PrId(7), &at("10.0.0.99"), None));
        assert!(
            !admits(&list, PrId(7), &at("10.0.1.1"), None),
            "another subnet"
        );
        assert!(
            !admits(&list, PrId(7), &at("fd00::1"), None),
            "another family"
        );
        assert!(
            admits(&list, PrId(7), &at("::ffff:10.0.0.5"), None),
            "IPv4-mapped"
        );
        assert!(
            admits(&list, PrId(8), &at("192.0.2.1"), None),
            "any address"
        );
        assert!(!admits(&list, PrId(9), &at("10.0.0.1"), None), "not listed");
        // A multi-homed peer: one of its addresses in the subnet is enough.
        let mut both = at("192.0.2.1");
        both.extend(at("10.0.0.3"));
        assert!(admits(&list, PrId(7), &both, None));
        assert!(
            admits(&[], PrId(9), &at("192.0.2.1"), None),
            "an empty list is open"
        );
        let everyone: AllowedPeer = "9@0.0.0.0/0".parse().unwrap();
        assert!(everyone.admits(PrId(9), &at("203.0.113.9"), None));
    }
}
