//! `rserpool status`: fetches a registrar's Prometheus text exposition over plain HTTP/1.1 and
//! summarises it: identity, pools and PEs, registrations, resolutions, removals, errors.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// One sample: metric name, labels, value.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

/// The authority (`host:port`) and path of a metrics URL (`http://host:port/path`; the path
/// defaults to `/metrics`), or what is wrong with it.
pub fn check_url(url: &str) -> Result<(&str, &str), String> {
    let example = "e.g. http://127.0.0.1:9863/metrics";
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("`{url}` is not an http:// URL ({example})"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/metrics"),
    };
    let port = authority.rsplit_once(':').map(|(_, port)| port);
    if port.is_none_or(|p| p.parse::<u16>().is_err()) || authority.starts_with(':') {
        return Err(format!(
            "`{url}` needs a host and a port ({example}; the registrar's `metrics.address`)"
        ));
    }
    Ok((authority, path))
}

/// Fetches `url` (`http://host:port/path`) and returns the response body.
pub fn fetch(url: &str) -> Result<String, String> {
    let (authority, path) = check_url(url)?;
    let address = authority
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve `{authority}`: {e}"))?
        .next()
        .ok_or_else(|| format!("`{authority}` has no address"))?;
    let timeout = Duration::from_secs(5);
    let mut stream = TcpStream::connect_timeout(&address, timeout)
        .map_err(|e| format!("cannot reach {url}: {e}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| {
            write!(
                stream,
                "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
            )
        })
        .map_err(|e| format!("cannot send the request to {url}: {e}"))?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .map_err(|e| format!("cannot read the answer of {url}: {e}"))?;
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{url} did not answer with HTTP"))?;
    let status = head.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(format!("{url} answered `{status}`"));
    }
    Ok(body.to_owned())
}

/// Parses the Prometheus text format 0.0.4 (comments skipped; label values without escapes).
pub fn parse(text: &str) -> Vec<Sample> {
    let mut samples = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, value) = match line.rsplit_once(' ') {
            Some((s, v)) => (s.trim(), v),
            None => continue,
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let inner = rest.trim_end_matches('}');
                let labels = inner
                    .split(',')
                    .filter_map(|pair| {
                        let (k, v) = pair.split_once('=')?;
                        Some((k.trim().to_owned(), v.trim().trim_matches('"').to_owned()))
                    })
                    .collect();
                (name, labels)
            }
            None => (series, Vec::new()),
        };
        samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    samples
}

/// Sums a metric's samples whose labels include every `(key, value)` of `matching` (a value of
/// `!x` matches every value except `x`).
fn sum(samples: &[Sample], name: &str, matching: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            matching.iter().all(|(k, want)| {
                let got = s
                    .labels
                    .iter()
                    .find(|(lk, _)| lk == k)
                    .map(|(_, v)| v.as_str());
                match want.strip_prefix('!') {
                    Some(not) => got.is_some_and(|g| g != not),
                    None => got == Some(*want),
                }
            })
        })
        .map(|s| s.value)
        .sum()
}

/// The values of a label over a metric's samples, with their sums, in exposition order.
fn by_label(samples: &[Sample], name: &str, label: &str) -> Vec<(String, f64)> {
    let mut out: Vec<(String, f64)> = Vec::new();
    for s in samples.iter().filter(|s| s.name == name) {
        if let Some((_, v)) = s.labels.iter().find(|(k, _)| k == label) {
            match out.iter_mut().find(|(l, _)| l == v) {
                Some((_, total)) => *total += s.value,
                None => out.push((v.clone(), s.value)),
            }
        }
    }
    out
}

/// The summary printed by `rserpool status`; `now_unix` is the current time for the uptime.
pub fn summary(samples: &[Sample], now_unix: f64) -> String {
    let n = |v: f64| v as u64;
    let mut out = String::new();
    if let Some(info) = samples.iter().find(|s| s.name == "rserpool_registrar_info") {
        let label = |k: &str| {
            info.labels
                .iter()
                .find(|(l, _)| l == k)
                .map_or("?", |(_, v)| v.as_str())
        };
        let _ = write!(
            out,
            "registrar {} (version {}, driver {})",
            label("pr_id"),
            label("version"),
            label("driver")
        );
        let started = sum(samples, "rserpool_start_time_seconds", &[]);
        if started > 0.0 && now_unix >= started {
            let _ = write!(out, ", up {} s", n(now_unix - started));
        }
        out.push('\n');
    }
    let _ = writeln!(
        out,
        "pools:             {}",
        n(sum(samples, "rserpool_pools", &[]))
    );
    let _ = writeln!(
        out,
        "pool elements:     {}",
        n(sum(samples, "rserpool_pool_elements", &[]))
    );
    for (title, name) in [
        ("registrations:    ", "rserpool_registrations_total"),
        ("deregistrations:  ", "rserpool_deregistrations_total"),
    ] {
        let _ = writeln!(
            out,
            "{title} {} accepted, {} refused",
            n(sum(samples, name, &[("result", "accepted")])),
            n(sum(samples, name, &[("result", "!accepted")]))
        );
    }
    let name = "rserpool_resolutions_total";
    let _ = writeln!(
        out,
        "resolutions:       {} found, {} unknown pool",
        n(sum(samples, name, &[("result", "found")])),
        n(sum(samples, name, &[("result", "unknown_pool")]))
    );
    let _ = writeln!(
        out,
        "keep-alives:       {} sent, {} acked",
        n(sum(samples, "rserpool_keep_alives_sent_total", &[])),
        n(sum(samples, "rserpool_keep_alive_acks_total", &[]))
    );
    let removals: Vec<String> = by_label(samples, "rserpool_pe_removals_total", "reason")
        .into_iter()
        .filter(|(_, v)| *v > 0.0)
        .map(|(reason, v)| format!("{} {reason}", n(v)))
        .collect();
    let _ = writeln!(
        out,
        "PE removals:       {}",
        if removals.is_empty() {
            "none".to_owned()
        } else {
            removals.join(", ")
        }
    );
    let decode = sum(samples, "rserpool_decode_errors_total", &[]);
    let refused = sum(
        samples,
        "rserpool_registrations_total",
        &[("result", "!accepted")],
    ) + sum(
        samples,
        "rserpool_deregistrations_total",
        &[("result", "!accepted")],
    );
    let _ = writeln!(
        out,
        "errors:            {} undecodable messages, {} refused requests, {} rate limited, {} over limits, {} unreachable reports",
        n(decode),
        n(refused),
        n(sum(samples, "rserpool_rate_limited_total", &[])),
        n(sum(samples, "rserpool_limit_refusals_total", &[])),
        n(sum(samples, "rserpool_unreachable_reports_total", &[]))
    );
    let open: Vec<String> = by_label(samples, "rserpool_connections_open", "transport")
        .into_iter()
        .map(|(t, v)| format!("{t} {}", n(v)))
        .collect();
    if !open.is_empty() {
        let _ = writeln!(out, "connections open:  {}", open.join(", "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP rserpool_pools Pools in the handlespace.
# TYPE rserpool_pools gauge
rserpool_pools 2
rserpool_pool_elements 5
rserpool_registrations_total{result="accepted"} 7
rserpool_registrations_total{result="inconsistent_policy"} 1
rserpool_registrations_total{result="other"} 2
rserpool_deregistrations_total{result="accepted"} 3
rserpool_resolutions_total{result="found"} 40
rserpool_resolutions_total{result="unknown_pool"} 4
rserpool_pe_removals_total{reason="expired"} 0
rserpool_pe_removals_total{reason="association_closed"} 2
rserpool_decode_errors_total{cause="dropped"} 1
rserpool_decode_errors_total{cause="0x0003"} 2
rserpool_connections_open{transport="tcp"} 3
rserpool_connections_open{transport="mptcp"} 1
rserpool_registrar_info{pr_id="0x0000abcd",version="0.1.0",driver="epoll"} 1
rserpool_start_time_seconds 1000
"#;

    #[test]
    fn parses_samples_with_labels() {
        let samples = parse(TEXT);
        assert_eq!(samples.len(), 16);
        assert_eq!(sum(&samples, "rserpool_registrations_total", &[]), 10.0);
        assert_eq!(
            sum(
                &samples,
                "rserpool_registrations_total",
                &[("result", "!accepted")]
            ),
            3.0
        );
        assert_eq!(
            by_label(&samples, "rserpool_connections_open", "transport"),
            [("tcp".to_owned(), 3.0), ("mptcp".to_owned(), 1.0)]
        );
    }

    #[test]
    fn the_summary_names_pools_pes_registrations_resolutions_and_errors() {
        let text = summary(&parse(TEXT), 1060.0);
        for expected in [
            "registrar 0x0000abcd (version 0.1.0, driver epoll), up 60 s",
            "pools:             2",
            "pool elements:     5",
            "registrations:     7 accepted, 3 refused",
            "deregistrations:   3 accepted, 0 refused",
            "resolutions:       40 found, 4 unknown pool",
            "PE removals:       2 association_closed",
            "3 undecodable messages, 3 refused requests",
            "connections open:  tcp 3, mptcp 1",
        ] {
            assert!(text.contains(expected), "missing `{expected}` in\n{text}");
        }
    }

    #[test]
    fn refuses_other_schemes_and_names_unreachable_addresses() {
        assert!(
            fetch("https://x/metrics")
                .unwrap_err()
                .contains("not an http:// URL")
        );
        assert_eq!(
            check_url("http://[::1]:9863"),
            Ok(("[::1]:9863", "/metrics"))
        );
        for bad in ["http://localhost/metrics", "http://:9863/m", "http://h:x/m"] {
            assert!(
                check_url(bad)
                    .unwrap_err()
                    .contains("needs a host and a port"),
                "{bad}"
            );
        }
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        drop(listener);
        let e = fetch(&format!("http://{address}/metrics")).unwrap_err();
        assert!(
            e.contains(&address.to_string()) && e.contains("refused"),
            "{e}"
        );
    }
}
