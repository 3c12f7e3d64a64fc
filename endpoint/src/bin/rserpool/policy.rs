//! The text form of member-selection policies on the command line: `rr`, `wrr:W`, `rand`,
//! `wrand:W`, `prio:P`, `lu:L`, `lud:L:D`, `plu:L:D`, `rlu:L` (RFC 5356) and RSPLIB's private
//! ones by the short names of [`policy_name`]. Loads and degradations take a number (decimal or
//! 0x hex) or a percentage of full load (`lu:25%`).

use rserpool_endpoint::policy_name;
use rserpool_protocol::Policy;

/// Parses a policy given on the command line.
pub fn parse(text: &str) -> Result<Policy, String> {
    let (name, rest) = text.split_once(':').unwrap_or((text, ""));
    let values: Vec<u32> = rest
        .split(':')
        .filter(|v| !v.is_empty())
        .map(value)
        .collect::<Result<_, _>>()?;
    let take = |n: usize| -> Result<[u32; 4], String> {
        if values.len() != n {
            return Err(format!(
                "policy `{name}` takes {n} value(s) separated by `:`, got {}",
                values.len()
            ));
        }
        let mut v = [0; 4];
        v[..n].copy_from_slice(&values);
        Ok(v)
    };
    Ok(match name.to_ascii_lowercase().as_str() {
        "rr" => {
            take(0)?;
            Policy::RoundRobin
        }
        "rand" => {
            take(0)?;
            Policy::Random
        }
        "wrr" => Policy::WeightedRoundRobin {
            weight: take(1)?[0],
        },
        "wrand" => Policy::WeightedRandom {
            weight: take(1)?[0],
        },
        "prio" => Policy::Priority {
            priority: take(1)?[0],
        },
        "lu" => Policy::LeastUsed { load: take(1)?[0] },
        "rlu" => Policy::RandomizedLeastUsed { load: take(1)?[0] },
        "lud" => {
            let [load, load_degradation, ..] = take(2)?;
            Policy::LeastUsedDegradation {
                load,
                load_degradation,
            }
        }
        "plu" => {
            let [load, load_degradation, ..] = take(2)?;
            Policy::PriorityLeastUsed {
                load,
                load_degradation,
            }
        }
        "rplu" => {
            let [load, load_degradation, ..] = take(2)?;
            Policy::RandomizedPriorityLeastUsed {
                load,
                load_degradation,
            }
        }
        "rlud" => {
            let [load, load_degradation, ..] = take(2)?;
            Policy::RandomizedLeastUsedDegradation {
                load,
                load_degradation,
            }
        }
        "plud" => {
            let [load, load_degradation, ..] = take(2)?;
            Policy::PriorityLeastUsedDegradation {
                load,
                load_degradation,
            }
        }
        "rplud" => {
            let [load, load_degradation, ..] = take(2)?;
            Policy::RandomizedPriorityLeastUsedDegradation {
                load,
                load_degradation,
            }
        }
        "wrand-dpf" => {
            let [weight, weight_dpf, distance, _] = take(3)?;
            Policy::WeightedRandomDpf {
                weight,
                weight_dpf,
                distance,
            }
        }
        "lu-dpf" => {
            let [load, load_dpf, distance, _] = take(3)?;
            Policy::LeastUsedDpf {
                load,
                load_dpf,
                distance,
            }
        }
        "lud-dpf" => {
            let [load, load_degradation, load_dpf, distance] = take(4)?;
            Policy::LeastUsedDegradationDpf {
                load,
                load_degradation,
                load_dpf,
                distance,
            }
        }
        "plu-dpf" => {
            let [load, load_degradation, load_dpf, distance] = take(4)?;
            Policy::PriorityLeastUsedDpf {
                load,
                load_degradation,
                load_dpf,
                distance,
            }
        }
        "plud-dpf" => {
            let [load, load_degradation, load_dpf, distance] = take(4)?;
            Policy::PriorityLeastUsedDegradationDpf {
                load,
                load_degradation,
                load_dpf,
                distance,
            }
        }
        _ => {
            return Err(format!(
                "unknown policy `{name}` (rr, wrr:W, rand, wrand:W, prio:P, lu:L, lud:L:D, \
                 plu:L:D, rlu:L, or RSPLIB's rplu, rlud, plud, rplud, wrand-dpf, lu-dpf, lud-dpf, \
                 plu-dpf, plud-dpf)"
            ));
        }
    })
}

/// One value: a number, 0x hex, or a percentage of 0xffffffff.
fn value(text: &str) -> Result<u32, String> {
    let bad = || format!("`{text}` is not a number, 0x hex number or percentage");
    if let Some(percent) = text.strip_suffix('%') {
        let p: f64 = percent.parse().map_err(|_| bad())?;
        if !(0.0..=100.0).contains(&p) {
            return Err(format!("`{text}` is not between 0% and 100%"));
        }
        return Ok((f64::from(u32::MAX) * p / 100.0).round() as u32);
    }
    match text.strip_prefix("0x") {
        Some(hex) => u32::from_str_radix(hex, 16).map_err(|_| bad()),
        None => text.parse().map_err(|_| bad()),
    }
}

/// The command-line text of a policy; [`parse`] reads it back.
pub fn format(policy: &Policy) -> String {
    let (values, n) = policy.fields();
    let mut text = policy_name(policy).to_owned();
    for v in &values[..n] {
        text.push(':');
        text.push_str(&v.to_string());
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_policy_reads_back_what_it_prints() {
        for p in [
            Policy::RoundRobin,
            Policy::Random,
            Policy::WeightedRoundRobin { weight: 3 },
            Policy::WeightedRandom { weight: 4 },
            Policy::Priority { priority: 5 },
            Policy::LeastUsed { load: 6 },
            Policy::RandomizedLeastUsed { load: 7 },
            Policy::LeastUsedDegradation {
                load: 1,
                load_degradation: 2,
            },
            Policy::PriorityLeastUsed {
                load: 1,
                load_degradation: 2,
            },
            Policy::RandomizedPriorityLeastUsed {
                load: 1,
                load_degradation: 2,
            },
            Policy::RandomizedLeastUsedDegradation {
                load: 1,
                load_degradation: 2,
            },
            Policy::PriorityLeastUsedDegradation {
                load: 1,
                load_degradation: 2,
            },
            Policy::RandomizedPriorityLeastUsedDegradation {
                load: 1,
                load_degradation: 2,
            },
            Policy::WeightedRandomDpf {
                weight: 1,
                weight_dpf: 2,
                distance: 3,
            },
            Policy::LeastUsedDpf {
                load: 1,
                load_dpf: 2,
                distance: 3,
            },
            Policy::LeastUsedDegradationDpf {
                load: 1,
                load_degradation: 2,
                load_dpf: 3,
                distance: 4,
            },
            Policy::PriorityLeastUsedDpf {
                load: 1,
                load_degradation: 2,
                load_dpf: 3,
                distance: 4,
            },
            Policy::PriorityLeastUsedDegradationDpf {
                load: 1,
                load_degradation: 2,
                load_dpf: 3,
                distance: 4,
            },
        ] {
            assert_eq!(parse(&format(&p)), Ok(p), "{}", format(&p));
        }
    }

    #[test]
    fn values_in_hex_and_percent_and_clear_errors() {
        assert_eq!(
            parse("wrr:0x10"),
            Ok(Policy::WeightedRoundRobin { weight: 16 })
        );
        assert_eq!(parse("LU:100%"), Ok(Policy::LeastUsed { load: u32::MAX }));
        assert_eq!(parse("lu:50%"), Ok(Policy::LeastUsed { load: 0x8000_0000 }));
        assert!(parse("lu").unwrap_err().contains("takes 1 value"));
        assert!(parse("rr:1").unwrap_err().contains("takes 0 value"));
        assert!(parse("lu:x").unwrap_err().contains("not a number"));
        assert!(
            parse("lu:101%")
                .unwrap_err()
                .contains("between 0% and 100%")
        );
        assert!(parse("fifo").unwrap_err().contains("unknown policy `fifo`"));
    }
}
