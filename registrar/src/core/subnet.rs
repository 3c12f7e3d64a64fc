//! An IP subnet (`10.0.0.0/8`, `fd00::/64`, or one address): where a peer's traffic must come
//! from, for the ENRP allowlist and the ASAP access rules when no TLS identity is at hand.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// An address and a prefix length of its family, or every address of both families.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Subnet(Option<(IpAddr, u8)>);

impl Subnet {
    /// Every address of both families (`any`).
    pub const ANY: Self = Self(None);

    /// Whether `ip` lies in it (an IPv4-mapped IPv6 address as its IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let Some((net, prefix)) = self.0 else {
            return true;
        };
        match (ip.to_canonical(), net) {
            (IpAddr::V4(ip), IpAddr::V4(net)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                u32::from(ip) & mask == u32::from(net) & mask
            }
            (IpAddr::V6(ip), IpAddr::V6(net)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
                u128::from(ip) & mask == u128::from(net) & mask
            }
            _ => false,
        }
    }

    /// The longest prefix of `ip`'s family.
    const fn full(ip: IpAddr) -> u8 {
        if ip.is_ipv4() { 32 } else { 128 }
    }
}

impl FromStr for Subnet {
    type Err = String;

    /// `10.0.0.7`, `10.0.0.0/24`, `fd00::/64`, `[fd00::1]`; `any` for every address.
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "any" {
            return Ok(Self::ANY);
        }
        let (address, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let net: IpAddr = address
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .map_err(|_| format!("`{address}` is not an IP address"))?;
        let net = net.to_canonical();
        let max = Self::full(net);
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|&p| p <= max)
                .ok_or_else(|| format!("the prefix length `{p}` is not 0 to {max}"))?,
        };
        Ok(Self(Some((net, prefix))))
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            None => f.write_str("any"),
            Some((net, prefix)) if prefix == Self::full(net) => write!(f, "{net}"),
            Some((net, prefix)) => write!(f, "{net}/{prefix}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn subnets_parse_print_and_hold_their_addresses() {
        let net: Subnet = "10.0.0.0/24".parse().unwrap();
        assert!(net.contains(ip("10.0.0.99")));
        assert!(net.contains(ip("::ffff:10.0.0.5")), "IPv4-mapped");
        assert!(!net.contains(ip("10.0.1.1")));
        assert!(!net.contains(ip("fd00::1")), "another family");
        let one: Subnet = "[fd00::1]".parse().unwrap();
        assert!(one.contains(ip("fd00::1")) && !one.contains(ip("fd00::2")));
        assert!(Subnet::ANY.contains(ip("203.0.113.9")) && Subnet::ANY.contains(ip("::1")));
        for (text, printed) in [
            ("10.0.0.0/24", "10.0.0.0/24"),
            ("10.0.0.7", "10.0.0.7"),
            ("fd00::/64", "fd00::/64"),
            ("[fd00::1]", "fd00::1"),
            ("any", "any"),
            ("0.0.0.0/0", "0.0.0.0/0"),
        ] {
            let s: Subnet = text.parse().unwrap();
            assert_eq!(s.to_string(), printed);
            assert_eq!(printed.parse::<Subnet>().unwrap(), s);
        }
        for bad in ["", "10.0.0.300", "10.0.0.0/33", "::/129", "x/8"] {
            assert!(bad.parse::<Subnet>().is_err(), "{bad}");
        }
        let zero: Subnet = "0.0.0.0/0".parse().unwrap();
        assert!(
            zero.contains(ip("192.0.2.1")) && !zero.contains(ip("::1")),
            "one family"
        );
    }
}
