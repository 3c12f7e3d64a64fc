//! Access control per pool handle (`access.rules`; RFC 5355 §2.2-2.4: registrations by
//! unauthorized PEs, §2.7: resolutions by unauthorized PUs): which sources may register,
//! deregister and resolve in which pools. A source is a subnet (a multi-homed SCTP peer
//! matches if one of its addresses does) or, over TLS, a name of its verified certificate
//! (`identity:NAME`, [`Principal`]). An empty rule list allows everything; once a
//! rule exists, every request needs a rule that allows it, and a refusal is answered with cause
//! 0xa ("rejected due to security considerations", RFC 5354 §4.1).

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use crate::core::identity::{Identity, Principal};

/// What a request asks to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    /// ASAP_REGISTRATION.
    Register,
    /// ASAP_DEREGISTRATION.
    Deregister,
    /// ASAP_HANDLE_RESOLUTION.
    Resolve,
}

impl Operation {
    /// Every operation, in the order a rule prints them.
    const ALL: [Self; 3] = [Self::Register, Self::Deregister, Self::Resolve];

    const fn bit(self) -> u8 {
        match self {
            Self::Register => 1,
            Self::Deregister => 2,
            Self::Resolve => 4,
        }
    }

    const fn name(self) -> &'static str {
        match self {
            Self::Register => "register",
            Self::Deregister => "deregister",
            Self::Resolve => "resolve",
        }
    }
}

/// The pools a rule covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pools {
    /// Every pool handle (`*`).
    Any,
    /// Handles that start with these bytes (`billing*`).
    Prefix(Box<[u8]>),
    /// This handle only.
    Exact(Box<[u8]>),
}

impl Pools {
    fn matches(&self, pool_handle: &[u8]) -> bool {
        match self {
            Self::Any => true,
            Self::Prefix(p) => pool_handle.starts_with(p),
            Self::Exact(h) => **h == *pool_handle,
        }
    }
}

/// One rule: `<pools> <operations> <from>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessRule {
    /// The pools it covers.
    pub pools: Pools,
    /// The operations it allows, as [`Operation`] bits.
    operations: u8,
    /// Whom it admits: a subnet, or a TLS certificate name.
    pub from: Principal,
}

impl AccessRule {
    /// Whether it allows `operation` in `pool_handle` from one of `sources` with `identity`.
    pub fn allows(
        &self,
        pool_handle: &[u8],
        operation: Operation,
        sources: &[SocketAddr],
        identity: Option<&Identity>,
    ) -> bool {
        self.operations & operation.bit() != 0
            && self.pools.matches(pool_handle)
            && self.from.admits(sources, identity)
    }
}

/// Whether `rules` allow `operation` in `pool_handle` from one of `sources` with `identity`
/// (an empty list allows everything).
pub fn allows(
    rules: &[AccessRule],
    pool_handle: &[u8],
    operation: Operation,
    sources: &[SocketAddr],
    identity: Option<&Identity>,
) -> bool {
    rules.is_empty()
        || rules
            .iter()
            .any(|r| r.allows(pool_handle, operation, sources, identity))
}

impl FromStr for AccessRule {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let err = |why: String| {
            format!(
                "bad access rule `{s}`: {why} (expected `<pools> <operations> <from>`, e.g. \
                 \"billing* register,deregister 10.1.0.0/16\" or \"* resolve any\"; pools: a \
                 handle, a prefix ending in `*`, or `*`; operations: register, deregister, \
                 resolve or all, comma-separated; from: an address, a subnet, any, or \
                 identity:NAME for a TLS peer whose certificate names NAME)"
            )
        };
        let words: Vec<&str> = s.split_whitespace().collect();
        let [pools, operations, from] = words[..] else {
            return Err(err(format!("{} words instead of 3", words.len())));
        };
        let pools = match pools {
            "*" => Pools::Any,
            p => match p.strip_suffix('*') {
                Some(prefix) => Pools::Prefix(prefix.as_bytes().into()),
                None => Pools::Exact(p.as_bytes().into()),
            },
        };
        let mut bits = 0;
        for name in operations.split(',') {
            bits |= match name {
                "all" => Operation::ALL.iter().map(|o| o.bit()).sum(),
                name => Operation::ALL
                    .iter()
                    .find(|o| o.name() == name)
                    .map(|o| o.bit())
                    .ok_or_else(|| err(format!("`{name}` is no operation")))?,
            };
        }
        let from = from.parse().map_err(err)?;
        Ok(Self {
            pools,
            operations: bits,
            from,
        })
    }
}

impl fmt::Display for AccessRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.pools {
            Pools::Any => f.write_str("*")?,
            Pools::Prefix(p) => write!(f, "{}*", String::from_utf8_lossy(p))?,
            Pools::Exact(h) => write!(f, "{}", String::from_utf8_lossy(h))?,
        }
        let names: Vec<&str> = Operation::ALL
            .iter()
            .filter(|o| self.operations & o.bit() != 0)
            .map(|o| o.name())
            .collect();
        write!(f, " {} {}", names.join(","), self.from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ip: &str) -> Vec<SocketAddr> {
        vec![SocketAddr::new(ip.parse().unwrap(), 1)]
    }

    #[test]
    fn rules_parse_print_and_round_trip() {
        for (text, printed) in [
            (
                "billing* register,deregister 10.1.0.0/16",
                "billing* register,deregister 10.1.0.0/16",
            ),
            ("* resolve any", "* resolve any"),
            (
                "pool-a all 192.0.2.7",
                "pool-a register,deregister,resolve 192.0.2.7",
            ),
            (
                "  x   resolve,register   fd00::/8 ",
                "x register,resolve fd00::/8",
            ),
        ] {
            let rule: AccessRule = text.parse().unwrap();
            assert_eq!(rule.to_string(), printed);
            assert_eq!(printed.parse::<AccessRule>().unwrap(), rule);
        }
        for bad in [
            "",
            "* resolve",
            "* read any",
            "* resolve 10.0.0.0/40",
            "a b c d",
        ] {
            let e = bad.parse::<AccessRule>().unwrap_err();
            assert!(
                e.contains("expected `<pools> <operations> <from>`"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn tls_peers_are_admitted_by_certificate_name() {
        let rules: Vec<AccessRule> = ["billing register identity:*.billing.example.net"]
            .iter()
            .map(|r| r.parse().unwrap())
            .collect();
        let pe = Identity::new(["pe1.billing.example.net".to_owned()]);
        let stranger = Identity::new(["pe1.payroll.example.net".to_owned()]);
        let here = at("10.1.2.3");
        assert!(allows(
            &rules,
            b"billing",
            Operation::Register,
            &here,
            Some(&pe)
        ));
        assert!(!allows(
            &rules,
            b"billing",
            Operation::Register,
            &here,
            Some(&stranger)
        ));
        assert!(!allows(
            &rules,
            b"billing",
            Operation::Register,
            &here,
            None
        ));
        assert_eq!(
            rules[0].to_string(),
            "billing register identity:*.billing.example.net"
        );
    }

    #[test]
    fn a_request_needs_a_rule_for_its_pool_its_operation_and_its_source() {
        let rules: Vec<AccessRule> = ["billing* register,deregister 10.1.0.0/16", "* resolve any"]
            .iter()
            .map(|r| r.parse().unwrap())
            .collect();
        let inside = at("10.1.2.3");
        let outside = at("192.0.2.1");
        assert!(allows(
            &rules,
            b"billing-eu",
            Operation::Register,
            &inside,
            None
        ));
        assert!(allows(
            &rules,
            b"billing-eu",
            Operation::Deregister,
            &inside,
            None
        ));
        assert!(
            !allows(&rules, b"billing-eu", Operation::Register, &outside, None),
            "another source"
        );
        assert!(
            !allows(&rules, b"payroll", Operation::Register, &inside, None),
            "another pool"
        );
        assert!(
            allows(&rules, b"payroll", Operation::Resolve, &outside, None),
            "resolving is open"
        );
        let mut multihomed = outside.clone();
        multihomed.extend(at("10.1.0.1"));
        assert!(allows(
            &rules,
            b"billing",
            Operation::Register,
            &multihomed,
            None
        ));
        assert!(
            allows(&[], b"anything", Operation::Register, &outside, None),
            "no rules: open"
        );
        let exact: Vec<AccessRule> = vec!["billing resolve any".parse().unwrap()];
        assert!(allows(
            &exact,
            b"billing",
            Operation::Resolve,
            &outside,
            None
        ));
        assert!(
            !allows(&exact, b"billing-eu", Operation::Resolve, &outside, None),
            "exact"
        );
        assert!(
            !allows(&exact, b"billing", Operation::Register, &outside, None),
            "default deny"
        );
    }
}
