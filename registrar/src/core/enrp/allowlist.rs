//! The ENRP peer allowlist (`enrp.allowed_peers`; RFC 5355 §2.5: a malicious ENRP server joining
//! the group of legitimate ones): which PR IDs may join the operating scope, each optionally
//! bound to the addresses it may speak from. Without TLS the binding is to a source subnet.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use rserpool_handlespace::PrId;

use crate::core::subnet::Subnet;

/// One admitted peer: a PR ID, and the subnet it must speak from (any address when `None`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AllowedPeer {
    /// The peer's PR ID.
    pub id: PrId,
    /// The network its associations and presences must come from.
    pub from: Option<Subnet>,
}

impl AllowedPeer {
    /// Whether `id`, speaking from one of `addresses` (any of a multi-homed peer's), is this
    /// entry.
    pub fn admits(&self, id: PrId, addresses: &[SocketAddr]) -> bool {
        self.id == id
            && self
                .from
                .is_none_or(|net| addresses.iter().any(|a| net.contains(a.ip())))
    }
}

/// Whether the list admits `id` from `addresses`: an empty list admits everyone (RSPLIB's open
/// scope).
pub fn admits(list: &[AllowedPeer], id: PrId, addresses: &[SocketAddr]) -> bool {
    list.is_empty() || list.iter().any(|p| p.admits(id, addresses))
}

/// Why an allowlist entry was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllowedPeerError(String);

impl fmt::Display for AllowedPeerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (expected a PR ID, optionally with the subnet it speaks from: \"0x2a\", \"42\", \
             \"42@10.0.0.7\", \"42@10.0.0.0/24\", \"42@fd00::/64\")",
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
            Some(from) => Some(from.parse::<Subnet>().map_err(|why| err(&why))?),
        };
        Ok(Self { id: PrId(id), from })
    }
}

impl fmt::Display for AllowedPeer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.id.0)?;
        match self.from {
            None => Ok(()),
            Some(net) => write!(f, "@{net}"),
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
        ] {
            let e = bad.parse::<AllowedPeer>().unwrap_err().to_string();
            assert!(e.contains("expected a PR ID"), "{bad}: {e}");
        }
    }

    #[test]
    fn an_entry_admits_its_id_from_its_subnet_only() {
        let list: Vec<AllowedPeer> = ["7@10.0.0.0/24", "8"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert!(admits(&list, PrId(7), &at("10.0.0.99")));
        assert!(!admits(&list, PrId(7), &at("10.0.1.1")), "another subnet");
        assert!(!admits(&list, PrId(7), &at("fd00::1")), "another family");
        assert!(
            admits(&list, PrId(7), &at("::ffff:10.0.0.5")),
            "IPv4-mapped"
        );
        assert!(admits(&list, PrId(8), &at("192.0.2.1")), "any address");
        assert!(!admits(&list, PrId(9), &at("10.0.0.1")), "not listed");
        // A multi-homed peer: one of its addresses in the subnet is enough.
        let mut both = at("192.0.2.1");
        both.extend(at("10.0.0.3"));
        assert!(admits(&list, PrId(7), &both));
        assert!(
            admits(&[], PrId(9), &at("192.0.2.1")),
            "an empty list is open"
        );
        let everyone: AllowedPeer = "9@0.0.0.0/0".parse().unwrap();
        assert!(everyone.admits(PrId(9), &at("203.0.113.9")));
    }
}
