//! How `rserpool resolve` and `rserpool watch` print pool elements: an aligned table, one line
//! per PE, or JSON; and how `watch` prints a pool's changes, each line with its time (RFC 3339,
//! UTC, milliseconds).

use std::time::{SystemTime, UNIX_EPOCH};

use rserpool_endpoint::pu::PoolChange;
use rserpool_endpoint::{Error, PeInfo};
use serde_json::{Value, json};

use crate::policy;

/// `address:port` of a PE (the first address; SCTP PEs list the others after a comma).
pub fn endpoint(pe: &PeInfo) -> String {
    let addresses: Vec<String> = pe
        .addresses()
        .iter()
        .map(|a| match a {
            std::net::IpAddr::V6(v6) => format!("[{v6}]"),
            std::net::IpAddr::V4(v4) => v4.to_string(),
        })
        .collect();
    if addresses.is_empty() {
        return "-".into();
    }
    format!("{}:{}", addresses.join(","), pe.port())
}

/// One line describing a PE.
pub fn line(pe: &PeInfo) -> String {
    format!(
        "{} {} {} {}",
        pe.id,
        pe.transport_name(),
        endpoint(pe),
        policy::format(&pe.policy)
    )
}

/// The PEs as an aligned table with a header.
pub fn table(pes: &[PeInfo]) -> String {
    let rows: Vec<[String; 5]> = pes
        .iter()
        .map(|pe| {
            [
                pe.id.to_string(),
                pe.transport_name().to_owned(),
                endpoint(pe),
                policy::format(&pe.policy),
                pe.home_pr.to_string(),
            ]
        })
        .collect();
    let header = ["PE ID", "TRANSPORT", "ENDPOINT", "POLICY", "HOME PR"];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(header.map(str::to_owned)).chain(rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// A PE as a JSON object.
pub fn json(pe: &PeInfo) -> Value {
    json!({
        "id": pe.id.0,
        "home_pr": pe.home_pr.0,
        "transport": pe.transport_name(),
        "addresses": pe.addresses().iter().map(ToString::to_string).collect::<Vec<_>>(),
        "port": pe.port(),
        "policy": policy::format(&pe.policy),
        "policy_type": pe.policy.policy_type(),
        "registration_life_ms": pe.registration_life,
    })
}

/// `time` as RFC 3339 in UTC with milliseconds, e.g. `2026-12-07T20:36:16.123Z`.
pub fn rfc3339(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Civil date of a day count since 1970-01-01 (Howard Hinnant's days_from_civil, inverted).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3_600,
        rest / 60 % 60,
        rest % 60,
        since.subsec_millis()
    )
}

/// Turns the changes of one watched pool into output lines: text (`+` a PE joined, `-` one
/// left, `~` one changed, with a summary line when the pool appears) or one JSON object per
/// line (`event`: added, removed, changed, gone or error; `time`; `pool`; the PE's fields).
pub struct WatchPrinter {
    pool: String,
    json: bool,
    /// The pool had PEs at the last change printed.
    known: bool,
}

impl WatchPrinter {
    /// A printer for `pool`, in JSON or text.
    pub fn new(pool: &str, json: bool) -> Self {
        Self {
            pool: pool.to_owned(),
            json,
            known: false,
        }
    }

    /// The lines describing `change` at `time` (an RFC 3339 text); none for a mode change,
    /// which `watch` tells on stderr.
    pub fn lines(&mut self, change: &PoolChange, time: &str) -> Vec<String> {
        let mut out = Vec::new();
        match change {
            PoolChange::Mode(_) => {}
            PoolChange::Elements {
                added,
                removed,
                changed,
                elements,
            } => {
                if !self.known && !self.json {
                    out.push(format!(
                        "{time} pool {}: {} PE(s)",
                        self.pool,
                        elements.len()
                    ));
                }
                self.known = true;
                for (event, sign, pes) in [
                    ("added", '+', added),
                    ("removed", '-', removed),
                    ("changed", '~', changed),
                ] {
                    for pe in pes {
                        out.push(self.pe_line(event, sign, pe, time));
                    }
                }
            }
            PoolChange::Gone { removed } => {
                self.known = false;
                for pe in removed {
                    out.push(self.pe_line("removed", '-', pe, time));
                }
                let error = Error::UnknownPool {
                    pool_handle: self.pool.clone(),
                };
                out.push(self.event_line("gone", &error, time));
            }
            PoolChange::Failed(error) => out.push(self.event_line("error", error, time)),
        }
        out
    }

    fn pe_line(&self, event: &str, sign: char, pe: &PeInfo, time: &str) -> String {
        if !self.json {
            return format!("{time} {sign} {}", line(pe));
        }
        let mut object = json(pe);
        object["event"] = event.into();
        object["time"] = time.into();
        object["pool"] = self.pool.as_str().into();
        object.to_string()
    }

    fn event_line(&self, event: &str, error: &Error, time: &str) -> String {
        if !self.json {
            return format!("{time} {error}");
        }
        json!({
            "event": event,
            "time": time,
            "pool": self.pool,
            "error": error.to_string(),
        })
        .to_string()
    }
}

#[cfg(test)]
mod tests {
    use rserpool_endpoint::PeTransport;
    use rserpool_protocol::{PeId, Policy, PrId, TransportKind};

    use super::*;

    fn pe(id: u64, address: &str) -> PeInfo {
        PeInfo {
            id: PeId(id),
            home_pr: PrId(0xabc),
            registration_life: 60_000,
            transport: PeTransport::Transport {
                kind: TransportKind::Tcp,
                port: 7,
                addresses: vec![address.parse().unwrap()],
                transport_use: 0,
            },
            policy: Policy::LeastUsed { load: 5 },
        }
    }

    #[test]
    fn table_line_and_json_show_id_endpoint_and_policy() {
        let pes = [pe(1, "127.0.0.1"), pe(0x1234_5678_9abc, "::1")];
        let t = table(&pes);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("PE ID"));
        assert!(lines[1].contains("0x00000001") && lines[1].contains("127.0.0.1:7"));
        assert!(lines[2].contains("[::1]:7") && lines[2].contains("lu:5"));
        assert_eq!(
            lines[1].find("tcp"),
            lines[2].find("tcp"),
            "aligned columns"
        );
        assert_eq!(line(&pes[0]), "0x00000001 tcp 127.0.0.1:7 lu:5");
        let j = json(&pes[1]);
        assert_eq!(j["id"], 0x1234_5678_9abc_u64);
        assert_eq!(j["addresses"][0], "::1");
        assert_eq!(j["policy"], "lu:5");
        assert_eq!(j["policy_type"], 0x4000_0001);
    }

    #[test]
    fn times_are_rfc3339_utc_with_milliseconds() {
        let at = |ms: u64| rfc3339(UNIX_EPOCH + std::time::Duration::from_millis(ms));
        assert_eq!(at(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400_007), "2000-02-29T00:00:00.007Z");
        assert_eq!(at(1_796_675_776_123), "2026-12-07T20:36:16.123Z");
        assert_eq!(at(4_102_444_799_999), "2099-12-31T23:59:59.999Z");
    }

    #[test]
    fn watch_lines_show_each_change_with_its_time() {
        let t = "2026-12-07T20:36:16.123Z";
        let (a, b) = (pe(1, "127.0.0.1"), pe(2, "127.0.0.2"));
        let mut b2 = b.clone();
        b2.policy = Policy::LeastUsed { load: 9 };
        let mut text = WatchPrinter::new("p", false);
        let first = PoolChange::Elements {
            added: vec![a.clone(), b.clone()],
            removed: vec![],
            changed: vec![],
            elements: vec![a.clone(), b.clone()],
        };
        assert_eq!(
            text.lines(&first, t),
            [
                format!("{t} pool p: 2 PE(s)"),
                format!("{t} + 0x00000001 tcp 127.0.0.1:7 lu:5"),
                format!("{t} + 0x00000002 tcp 127.0.0.2:7 lu:5"),
            ]
        );
        let next = PoolChange::Elements {
            added: vec![],
            removed: vec![a.clone()],
            changed: vec![b2.clone()],
            elements: vec![b2.clone()],
        };
        assert_eq!(
            text.lines(&next, t),
            [
                format!("{t} - 0x00000001 tcp 127.0.0.1:7 lu:5"),
                format!("{t} ~ 0x00000002 tcp 127.0.0.2:7 lu:9"),
            ],
            "no summary once the pool is known"
        );
        let gone = PoolChange::Gone {
            removed: vec![b2.clone()],
        };
        assert_eq!(
            text.lines(&gone, t),
            [
                format!("{t} - 0x00000002 tcp 127.0.0.2:7 lu:9"),
                format!("{t} unknown pool `p` (cause 0x0009)"),
            ]
        );
        assert_eq!(
            text.lines(&first, t)[0],
            format!("{t} pool p: 2 PE(s)"),
            "back"
        );

        let mut json = WatchPrinter::new("p", true);
        let lines = json.lines(&first, t);
        assert_eq!(lines.len(), 2, "no summary in JSON");
        let v: Value = serde_json::from_str(&lines[1]).unwrap();
        assert_eq!(v["event"], "added");
        assert_eq!(v["time"], t);
        assert_eq!(v["pool"], "p");
        assert_eq!(v["id"], 2);
        assert_eq!(v["addresses"][0], "127.0.0.2");
        assert_eq!(v["policy"], "lu:5");
        let v: Value = serde_json::from_str(&json.lines(&next, t)[1]).unwrap();
        assert_eq!(
            (v["event"].as_str(), v["policy"].as_str()),
            (Some("changed"), Some("lu:9"))
        );
        let lines = json.lines(&gone, t);
        let v: Value = serde_json::from_str(&lines[1]).unwrap();
        assert_eq!(v["event"], "gone");
        assert_eq!(v["error"], "unknown pool `p` (cause 0x0009)");
        let failed = PoolChange::Failed(Error::Unreachable(vec![]));
        let v: Value = serde_json::from_str(&json.lines(&failed, t)[0]).unwrap();
        assert_eq!(v["event"], "error");
        assert!(
            json.lines(
                &PoolChange::Mode(rserpool_endpoint::pu::SubscriptionMode::Polling),
                t
            )
            .is_empty()
        );
    }
}
