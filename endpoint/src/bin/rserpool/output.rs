//! How `rserpool resolve` and `rserpool watch` print pool elements: an aligned table, one line
//! per PE, or JSON.

use rserpool_endpoint::PeInfo;
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
}
