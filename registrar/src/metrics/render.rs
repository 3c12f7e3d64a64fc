//! The Prometheus text exposition format 0.0.4 of all workers' metrics, summed over workers
//! (except the per-worker load series), plus the process-wide info.

use std::fmt::{self, Write as _};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use rserpool_protocol::PrId;

use super::ProcessInfo;
use crate::core::Protocol;
use crate::core::counters::{
    CAUSES, Counters, DECODE_ERROR_CAUSES, DEREGISTRATION_CAUSES, LATENCY_BOUNDS_NANOS, Limit,
    MESSAGE_SLOTS, OTHER_CAUSE, OUTCOME_SLOTS, REGISTRATION_CAUSES, RemovalReason, RequestKind,
    SctpUdpOutcome, SubscriptionRefusal, TransportLabel, UNKNOWN_TYPE, WorkerMetrics,
};

/// Prometheus text exposition format 0.0.4 of all workers plus process-wide info, appended to
/// `out`. A labelled series is exposed from the start when the registrar can move it; one it
/// cannot (a message type it never sends, a cause it never answers with) is left out, and
/// appears only should it be counted anyway, so that no count is ever hidden.
pub fn render(workers: &[Arc<WorkerMetrics>], info: &ProcessInfo, out: &mut String) {
    let mut e = Exposition { out, workers };

    e.messages(
        "rserpool_messages_received_total",
        "Messages received, by protocol and message type (\"unknown\" = a type code the \
         protocol does not define).",
        |c| &c.messages_in,
        Protocol::received,
        true,
    );
    e.messages(
        "rserpool_messages_sent_total",
        "Messages sent, by protocol and message type.",
        |c| &c.messages_out,
        Protocol::sent,
        false,
    );

    e.outcomes(
        "rserpool_decode_errors_total",
        "Messages that could not be decoded, by the RFC 5354 cause replied with (\"dropped\" = \
         no reply).",
        ("cause", "dropped"),
        &DECODE_ERROR_CAUSES,
        |c| &c.decode_errors,
    );
    e.outcomes(
        "rserpool_registrations_total",
        "Registrations answered, by result: accepted or the RFC 5354 cause they were refused \
         with.",
        ("result", "accepted"),
        &REGISTRATION_CAUSES,
        |c| &c.registrations,
    );
    e.outcomes(
        "rserpool_deregistrations_total",
        "Deregistrations answered, by result: accepted or the RFC 5354 cause they were refused \
         with.",
        ("result", "accepted"),
        &DEREGISTRATION_CAUSES,
        |c| &c.deregistrations,
    );

    let name = "rserpool_resolutions_total";
    e.family(name, "counter", "Handle resolutions answered, by result.");
    for (i, result) in ["found", "unknown_pool"].into_iter().enumerate() {
        let v = e.sum(|c| &c.resolutions[i]);
        e.sample(name, &[("result", result)], v);
    }

    e.counter(
        "rserpool_resolution_items_total",
        "Pool elements returned by handle resolutions.",
        |c| &c.resolution_items,
    );

    let name = "rserpool_pe_removals_total";
    e.family(
        name,
        "counter",
        "Pool elements removed from the handlespace, by reason.",
    );
    for reason in RemovalReason::ALL {
        let v = e.sum(|c| &c.pe_removals[reason as usize]);
        e.sample(name, &[("reason", reason.label())], v);
    }

    e.counter(
        "rserpool_keep_alives_sent_total",
        "ASAP_ENDPOINT_KEEP_ALIVE messages sent to pool elements.",
        |c| &c.keep_alives_sent,
    );
    e.counter(
        "rserpool_keep_alive_acks_total",
        "ASAP_ENDPOINT_KEEP_ALIVE_ACK messages received.",
        |c| &c.keep_alive_acks,
    );
    e.counter(
        "rserpool_unreachable_reports_total",
        "ASAP_ENDPOINT_UNREACHABLE reports received.",
        |c| &c.unreachable_reports,
    );
    e.counter(
        "rserpool_rate_limited_total",
        "Requests refused by rate limiting.",
        |c| &c.rate_limited,
    );

    let name = "rserpool_limit_refusals_total";
    e.family(
        name,
        "counter",
        "Requests or connections refused by a configured limit, by limit; for send_buffer, \
         SCTP associations aborted because their peers stopped reading while the socket's \
         shared send buffer was full.",
    );
    for limit in Limit::ALL {
        let v = e.sum(|c| &c.limit_refusals[limit as usize]);
        e.sample(name, &[("limit", limit.label())], v);
    }

    let name = "rserpool_sctp_udp_packets_total";
    e.family(
        name,
        "counter",
        "SCTP-in-UDP packets that no association took, by what was done: handshake answers, \
         out-of-the-blue packets answered with an ABORT, packets dropped (malformed, bad \
         checksum or cookie), answers dropped in a flood, associations refused at the \
         connection limit, peers that restarted.",
    );
    for outcome in SctpUdpOutcome::ALL {
        let v = e.sum(|c| &c.sctp_udp[outcome as usize]);
        e.sample(name, &[("outcome", outcome.label())], v);
    }

    // Closed before opened: a connection opened and closed between the loads counts as open
    // rather than pushing the gauge below zero.
    let closed = TransportLabel::ALL.map(|t| e.sum(|c| &c.connections_closed[t as usize]));
    let opened = TransportLabel::ALL.map(|t| e.sum(|c| &c.connections_opened[t as usize]));
    let name = "rserpool_connections_opened_total";
    e.family(
        name,
        "counter",
        "Connections and associations accepted, by transport.",
    );
    for (t, v) in TransportLabel::ALL.iter().zip(opened) {
        e.sample_if(t.has_connections(), name, &[("transport", t.label())], v);
    }
    let name = "rserpool_connections_open";
    e.family(
        name,
        "gauge",
        "Connections and associations open now, by transport.",
    );
    for ((t, o), c) in TransportLabel::ALL.iter().zip(opened).zip(closed) {
        let labels = [("transport", t.label())];
        e.sample_if(
            t.has_connections() || o != 0,
            name,
            &labels,
            o.saturating_sub(c),
        );
    }

    e.counter(
        "rserpool_mailbox_forwards_total",
        "Handlespace writes passed to another worker's shard.",
        |c| &c.mailbox_forwards,
    );
    e.gauge(
        "rserpool_subscriptions",
        "ASAP subscriptions (handle resolutions with the S bit, RFC 5352 §2.2.5) held now.",
        |c| &c.subscriptions,
    );
    e.counter(
        "rserpool_subscriptions_accepted_total",
        "ASAP subscriptions accepted (answered with the A bit); a renewal is not counted.",
        |c| &c.subscriptions_accepted,
    );
    let name = "rserpool_subscriptions_refused_total";
    e.family(
        name,
        "counter",
        "ASAP subscriptions refused by a [subscriptions] limit (answered without the A bit), by \
         limit.",
    );
    for reason in SubscriptionRefusal::ALL {
        let v = e.sum(|c| &c.subscription_refusals[reason as usize]);
        e.sample(name, &[("limit", reason.label())], v);
    }
    e.counter(
        "rserpool_subscription_pushes_total",
        "Handle resolution responses pushed to subscribers after a pool changed (RFC 5352 \
         §2.2.6).",
        |c| &c.subscription_pushes,
    );
    e.counter(
        "rserpool_enrp_resyncs_total",
        "ENRP audits that found a peer's checksum different and resynchronised its PEs.",
        |c| &c.enrp_resyncs,
    );
    e.counter(
        "rserpool_enrp_peers_dead_total",
        "ENRP peers that did not answer a probe and were declared dead.",
        |c| &c.enrp_peers_dead,
    );
    e.counter(
        "rserpool_enrp_takeovers_total",
        "Takeovers of a dead peer's PEs won by this registrar.",
        |c| &c.enrp_takeovers,
    );
    e.counter(
        "rserpool_enrp_withheld_total",
        "PEs left out of handle updates and table pages to RFC-generation peers because their \
         PE or home PR ID needs 64 bits.",
        |c| &c.enrp_withheld,
    );

    e.gauge(
        "rserpool_enrp_peers",
        "ENRP peers (other registrars of the operating scope) this registrar knows.",
        |c| &c.enrp_peers,
    );
    let peers: Vec<_> = e
        .workers
        .iter()
        .flat_map(|w| w.peers())
        .map(|p| (PrId(p.id).to_string(), p))
        .collect();
    let name = "rserpool_enrp_peer_connected";
    e.family(
        name,
        "gauge",
        "1 while an association to the ENRP peer is up, by PR ID (as of the last ENRP timer).",
    );
    for (id, p) in &peers {
        e.sample(name, &[("peer", id)], u64::from(p.connected));
    }
    let name = "rserpool_enrp_peer_last_heard_seconds";
    e.family(
        name,
        "gauge",
        "Seconds since the ENRP peer was last heard from, by PR ID (as of the last ENRP timer).",
    );
    for (id, p) in &peers {
        e.sample(name, &[("peer", id)], Seconds(p.heard_ago * 1_000_000));
    }
    e.gauge(
        "rserpool_enrp_starting",
        "1 while the registrar loads the handlespace from a mentor at start-up (RFC 5353 §3.2) \
         and is not ready; 0 after.",
        |c| &c.enrp_starting,
    );
    e.gauge(
        "rserpool_workers_running",
        "Workers whose event loop has run at least one turn.",
        |c| &c.workers_running,
    );
    e.counter(
        "rserpool_config_reloads_total",
        "SIGHUP reloads of the configuration that were applied.",
        |c| &c.config_reloads,
    );
    e.counter(
        "rserpool_config_reload_failures_total",
        "SIGHUP reloads refused because the new configuration is invalid (the old one stays).",
        |c| &c.config_reload_failures,
    );
    let name = "rserpool_config_last_reload_successful";
    e.family(
        name,
        "gauge",
        "0 while the last SIGHUP reload of the configuration was refused, else 1.",
    );
    let failed = e.sum(|c| &c.config_last_reload_failed);
    e.sample(name, &[], u64::from(failed == 0));
    e.gauge("rserpool_pools", "Pools in the handlespace.", |c| &c.pools);
    e.gauge(
        "rserpool_pool_elements",
        "Pool elements in the handlespace.",
        |c| &c.pool_elements,
    );

    e.latency();

    e.per_worker(
        "rserpool_worker_busy_seconds_total",
        "Time each worker spent handling events.",
        |c| Seconds(c.busy_nanos.load(Relaxed)),
    );
    e.per_worker(
        "rserpool_worker_idle_seconds_total",
        "Time each worker spent waiting for events.",
        |c| Seconds(c.idle_nanos.load(Relaxed)),
    );
    e.per_worker(
        "rserpool_worker_events_total",
        "Events each worker handled.",
        |c| c.events.load(Relaxed),
    );

    let name = "rserpool_registrar_info";
    e.family(
        name,
        "gauge",
        "Constant 1, labelled with this registrar's PR ID, version and I/O driver.",
    );
    let pr_id = PrId(info.pr_id).to_string();
    e.sample(
        name,
        &[
            ("pr_id", &pr_id),
            ("version", info.version),
            ("driver", info.driver),
        ],
        1,
    );

    let name = "rserpool_start_time_seconds";
    e.family(
        name,
        "gauge",
        "Start time of the process in seconds since the Unix epoch.",
    );
    e.sample(name, &[], info.started_unix_secs);
}

/// A writer of exposition lines over the workers being summed.
struct Exposition<'a> {
    out: &'a mut String,
    workers: &'a [Arc<WorkerMetrics>],
}

impl Exposition<'_> {
    /// The sum of one atomic over all workers.
    fn sum(&self, field: impl Fn(&Counters) -> &AtomicU64) -> u64 {
        self.workers.iter().fold(0u64, |sum, w| {
            sum.wrapping_add(field(&w.counters).load(Relaxed))
        })
    }

    /// The `# HELP` and `# TYPE` lines of a family.
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        self.put(format_args!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
    }

    /// A family with one unlabelled counter summed over workers.
    fn counter(&mut self, name: &str, help: &str, field: impl Fn(&Counters) -> &AtomicU64) {
        self.family(name, "counter", help);
        let v = self.sum(field);
        self.sample(name, &[], v);
    }

    /// A family with one unlabelled gauge summed over workers.
    fn gauge(&mut self, name: &str, help: &str, field: impl Fn(&Counters) -> &AtomicU64) {
        self.family(name, "gauge", help);
        let v = self.sum(field);
        self.sample(name, &[], v);
    }

    /// A counter family with one sample per worker, labelled with the worker number.
    fn per_worker<V: fmt::Display>(
        &mut self,
        name: &str,
        help: &str,
        value: impl Fn(&Counters) -> V,
    ) {
        self.family(name, "counter", help);
        for w in self.workers {
            let worker = w.worker.to_string();
            self.sample(name, &[("worker", &worker)], value(&w.counters));
        }
    }

    /// A message counter family of one direction: per protocol, the types of `exchanged`
    /// (those the registrar receives, or sends), the other known types once counted, then
    /// "unknown" (always when `unknown_exchanged`, else once counted).
    fn messages(
        &mut self,
        name: &str,
        help: &str,
        field: impl Fn(&Counters) -> &[[AtomicU64; MESSAGE_SLOTS]; Protocol::ALL.len()],
        exchanged: fn(Protocol) -> &'static [u8],
        unknown_exchanged: bool,
    ) {
        self.family(name, "counter", help);
        for protocol in Protocol::ALL {
            let p = protocol as usize;
            for (i, &(code, ty)) in protocol.types().iter().enumerate() {
                let v = self.sum(|c| &field(c)[p][i + 1]);
                let labels = [("protocol", protocol.label()), ("type", ty)];
                self.sample_if(exchanged(protocol).contains(&code), name, &labels, v);
            }
            let v = self.sum(|c| &field(c)[p][0]);
            let labels = [("protocol", protocol.label()), ("type", UNKNOWN_TYPE)];
            self.sample_if(unknown_exchanged, name, &labels, v);
        }
    }

    /// An outcome counter family labelled `label`: `none` (slot 0: accepted, or dropped), the
    /// causes of `causes` by name, and any other cause, or "other", once counted.
    fn outcomes(
        &mut self,
        name: &str,
        help: &str,
        (label, none): (&str, &str),
        causes: &[u16],
        field: impl Fn(&Counters) -> &[AtomicU64; OUTCOME_SLOTS],
    ) {
        self.family(name, "counter", help);
        let v = self.sum(|c| &field(c)[0]);
        self.sample(name, &[(label, none)], v);
        for (i, &(code, cause)) in CAUSES.iter().enumerate() {
            let v = self.sum(|c| &field(c)[i + 1]);
            self.sample_if(causes.contains(&code), name, &[(label, cause)], v);
        }
        let v = self.sum(|c| &field(c)[CAUSES.len() + 1]);
        self.sample_if(false, name, &[(label, OTHER_CAUSE)], v);
    }

    /// A sample of a series the registrar can move (`exposed`), or of one it cannot that was
    /// counted anyway (not zero).
    fn sample_if(&mut self, exposed: bool, name: &str, labels: &[(&str, &str)], value: u64) {
        if exposed || value != 0 {
            self.sample(name, labels, value);
        }
    }

    /// One sample line; label values are escaped.
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl fmt::Display) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (label, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(label);
                self.out.push_str("=\"");
                escape_label_value(self.out, v);
                self.out.push('"');
            }
            self.out.push('}');
        }
        self.put(format_args!(" {value}\n"));
    }

    /// The request latency histogram, buckets cumulative, `_count` equal to the `+Inf` bucket.
    fn latency(&mut self) {
        let name = "rserpool_request_duration_seconds";
        self.family(
            name,
            "histogram",
            "Request latency from receive to reply queued, by request kind.",
        );
        let bounds = LATENCY_BOUNDS_NANOS.map(|b| Seconds(b).to_string());
        let bucket = format!("{name}_bucket");
        for kind in RequestKind::ALL {
            let k = kind as usize;
            let mut cumulative = 0u64;
            for (i, le) in bounds.iter().enumerate() {
                cumulative = cumulative.wrapping_add(self.sum(|c| &c.latency[k].buckets[i]));
                self.sample(&bucket, &[("kind", kind.label()), ("le", le)], cumulative);
            }
            let overflow = self.sum(|c| &c.latency[k].buckets[LATENCY_BOUNDS_NANOS.len()]);
            let count = cumulative.wrapping_add(overflow);
            self.sample(&bucket, &[("kind", kind.label()), ("le", "+Inf")], count);
            let sum = Seconds(self.sum(|c| &c.latency[k].sum_nanos));
            self.sample(&format!("{name}_sum"), &[("kind", kind.label())], sum);
            self.sample(&format!("{name}_count"), &[("kind", kind.label())], count);
        }
    }

    /// Appends formatted text.
    fn put(&mut self, args: fmt::Arguments<'_>) {
        // Formatting into a `String` only fails if a `Display` impl fails; ours do not.
        let _ = self.out.write_fmt(args);
    }
}

/// Appends a label value with `\`, `"` and newline escaped as the text format requires.
fn escape_label_value(out: &mut String, value: &str) {
    for ch in value.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            _ => out.push(ch),
        }
    }
}

/// Nanoseconds displayed as exact decimal seconds without trailing zeros ("0.00025", "3").
struct Seconds(u64);

impl fmt::Display for Seconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (secs, mut frac) = (self.0 / 1_000_000_000, self.0 % 1_000_000_000);
        if frac == 0 {
            return write!(f, "{secs}");
        }
        let mut width = 9;
        while frac % 10 == 0 {
            frac /= 10;
            width -= 1;
        }
        write!(f, "{secs}.{frac:0width$}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::counters::{Limit, RemovalReason, RequestKind, TransportLabel};
    use rserpool_protocol::asap::message_type as asap;
    use rserpool_protocol::cause;
    use rserpool_protocol::enrp::message_type as enrp;

    /// One parsed sample line.
    #[derive(Debug)]
    struct Sample {
        name: String,
        labels: Vec<(String, String)>,
        value: f64,
    }

    /// Parses one `name{label="value",...} value` line, unescaping label values; `Err` says
    /// what is wrong.
    fn parse_sample(line: &str) -> Result<Sample, String> {
        let is_name_start = |c: char| c.is_ascii_alphabetic() || c == '_' || c == ':';
        let is_name_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
        let end = line
            .find(|c: char| !is_name_char(c))
            .ok_or("no value after the name")?;
        let name = &line[..end];
        if !name.starts_with(is_name_start) {
            return Err(format!("bad metric name `{name}`"));
        }
        let mut rest = &line[end..];
        let mut labels = Vec::new();
        if let Some(r) = rest.strip_prefix('{') {
            rest = r;
            loop {
                if let Some(r) = rest.strip_prefix('}') {
                    rest = r;
                    break;
                }
                let eq = rest.find('=').ok_or("label without `=`")?;
                let label = &rest[..eq];
                if label.is_empty()
                    || !label.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                    || !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                {
                    return Err(format!("bad label name `{label}`"));
                }
                let mut chars = rest[eq + 1..]
                    .strip_prefix('"')
                    .ok_or("unquoted label value")?
                    .char_indices();
                let mut value = String::new();
                let close = loop {
                    match chars.next().ok_or("unterminated label value")? {
                        (i, '"') => break i,
                        (_, '\\') => match chars.next().ok_or("dangling escape")?.1 {
                            '\\' => value.push('\\'),
                            '"' => value.push('"'),
                            'n' => value.push('\n'),
                            c => return Err(format!("bad escape `\\{c}`")),
                        },
                        (_, '\n') => return Err("raw newline in label value".into()),
                        (_, c) => value.push(c),
                    }
                };
                labels.push((label.to_owned(), value));
                rest = &rest[eq + 1..][1 + close + 1..];
                if let Some(r) = rest.strip_prefix(',') {
                    rest = r;
                } else if !rest.starts_with('}') {
                    return Err("labels not separated by `,`".into());
                }
            }
        }
        let value = rest.strip_prefix(' ').ok_or("no space before the value")?;
        let value = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v if v.starts_with(|c: char| c.is_ascii_digit() || c == '-') => {
                v.parse().map_err(|_| format!("bad value `{v}`"))?
            }
            v => return Err(format!("bad value `{v}`")),
        };
        Ok(Sample {
            name: name.to_owned(),
            labels,
            value,
        })
    }

    /// Parses a whole exposition, checking every line and the HELP/TYPE structure: each family
    /// has exactly one HELP and one TYPE before its samples, and its samples are contiguous.
    fn parse(text: &str) -> Vec<Sample> {
        assert!(text.ends_with('\n'), "exposition must end with a newline");
        let mut help = std::collections::HashMap::<&str, usize>::new();
        let mut types = std::collections::HashMap::<&str, &str>::new();
        let mut finished = std::collections::HashSet::<String>::new();
        let mut current: Option<String> = None;
        let mut samples = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, text) = rest.split_once(' ').expect("HELP without text");
                assert!(!text.is_empty(), "empty HELP for {name}");
                *help.entry(name).or_default() += 1;
                assert_eq!(help[name], 1, "{name} has more than one HELP");
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE without kind");
                assert!(
                    ["counter", "gauge", "histogram"].contains(&kind),
                    "{name}: bad type {kind}"
                );
                assert!(
                    types.insert(name, kind).is_none(),
                    "{name} has more than one TYPE"
                );
                assert_eq!(help.get(name), Some(&1), "{name}: TYPE without HELP");
                if let Some(previous) = current.replace(name.to_owned()) {
                    finished.insert(previous);
                }
            } else {
                assert!(!line.starts_with('#'), "stray comment `{line}`");
                let sample = parse_sample(line).unwrap_or_else(|e| panic!("`{line}`: {e}"));
                let family = current.as_deref().expect("sample before any TYPE");
                let kind = types[family];
                let belongs = if kind == "histogram" {
                    ["_bucket", "_sum", "_count"]
                        .iter()
                        .any(|s| sample.name.strip_suffix(s) == Some(family))
                } else {
                    sample.name == family
                };
                assert!(belongs, "`{line}` outside its family (in {family})");
                assert!(!finished.contains(&sample.name), "{line}: family split");
                samples.push(sample);
            }
        }
        assert_eq!(help.len(), types.len(), "HELP without TYPE");
        samples
    }

    /// The value of the sample with exactly these labels.
    fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
        let found: Vec<&Sample> = samples
            .iter()
            .filter(|s| {
                s.name == name
                    && s.labels.len() == labels.len()
                    && labels
                        .iter()
                        .all(|&(k, v)| s.labels.iter().any(|(sk, sv)| sk == k && sv == v))
            })
            .collect();
        assert_eq!(found.len(), 1, "{name}{labels:?}: {found:?}");
        found[0].value
    }

    fn info() -> ProcessInfo {
        ProcessInfo {
            pr_id: 0x2a,
            version: "0.1.0",
            started_unix_secs: 1_700_000_000,
            driver: "epoll",
        }
    }

    fn rendered(workers: &[Arc<WorkerMetrics>], info: &ProcessInfo) -> String {
        let mut out = String::new();
        render(workers, info, &mut out);
        out
    }

    #[test]
    fn counters_of_two_workers_are_summed() {
        let a = Arc::new(WorkerMetrics::new(0));
        let b = Arc::new(WorkerMetrics::new(1));
        a.message_in(Protocol::Asap, asap::REGISTRATION);
        a.message_in(Protocol::Asap, asap::REGISTRATION);
        b.message_in(Protocol::Asap, asap::REGISTRATION);
        b.message_in(Protocol::Asap, 0x7f);
        a.message_in(Protocol::Enrp, enrp::ERROR);
        b.message_out(Protocol::Asap, asap::ENDPOINT_KEEP_ALIVE_ACK);
        a.registration(None);
        b.registration(None);
        b.registration(Some(cause::INCONSISTENT_POLICY));
        a.registration(Some(0x1234));
        b.deregistration(Some(cause::REJECTED_SECURITY));
        a.decode_error(None);
        b.decode_error(Some(cause::UNRECOGNIZED_PARAMETER));
        a.resolution(true, 3);
        b.resolution(true, 2);
        b.resolution(false, 0);
        a.pe_removed(RemovalReason::KeepAliveTimeout);
        b.pe_removed(RemovalReason::KeepAliveTimeout);
        a.keep_alive_sent();
        b.keep_alive_ack();
        a.unreachable_report();
        b.rate_limited();
        a.limit_refused(Limit::PesPerPool);
        a.connection_opened(TransportLabel::Tcp);
        b.connection_opened(TransportLabel::Tcp);
        b.connection_closed(TransportLabel::Tcp);
        a.mailbox_forwarded();
        b.mailbox_forwarded();
        a.set_subscriptions(2);
        b.set_subscriptions(1);
        a.subscription_accepted();
        b.subscription_accepted();
        b.subscription_refused(SubscriptionRefusal::Total);
        a.subscription_pushed();
        a.set_shard(3, 10);
        b.set_shard(4, 20);
        a.loop_turn(1_500_000_000, 250_000, 7);
        b.loop_turn(2_000_000_000, 0, 1);

        let s = parse(&rendered(&[a, b], &info()));
        let asap = |ty| [("protocol", "asap"), ("type", ty)];
        assert_eq!(
            value(
                &s,
                "rserpool_messages_received_total",
                &asap("registration")
            ),
            3.0
        );
        assert_eq!(
            value(&s, "rserpool_messages_received_total", &asap("unknown")),
            1.0
        );
        assert_eq!(
            value(&s, "rserpool_messages_received_total", &asap("error")),
            0.0
        );
        assert_eq!(
            value(
                &s,
                "rserpool_messages_received_total",
                &[("protocol", "enrp"), ("type", "error")]
            ),
            1.0
        );
        assert_eq!(
            value(
                &s,
                "rserpool_messages_sent_total",
                &asap("endpoint_keep_alive_ack")
            ),
            1.0
        );
        let reg = |r| [("result", r)];
        assert_eq!(
            value(&s, "rserpool_registrations_total", &reg("accepted")),
            2.0
        );
        assert_eq!(
            value(
                &s,
                "rserpool_registrations_total",
                &reg("inconsistent_policy")
            ),
            1.0
        );
        assert_eq!(
            value(&s, "rserpool_registrations_total", &reg("other")),
            1.0
        );
        assert_eq!(
            value(
                &s,
                "rserpool_deregistrations_total",
                &reg("rejected_security")
            ),
            1.0
        );
        assert_eq!(
            value(&s, "rserpool_decode_errors_total", &[("cause", "dropped")]),
            1.0
        );
        assert_eq!(
            value(
                &s,
                "rserpool_decode_errors_total",
                &[("cause", "unrecognized_parameter")]
            ),
            1.0
        );
        assert_eq!(value(&s, "rserpool_resolutions_total", &reg("found")), 2.0);
        assert_eq!(
            value(&s, "rserpool_resolutions_total", &reg("unknown_pool")),
            1.0
        );
        assert_eq!(value(&s, "rserpool_resolution_items_total", &[]), 5.0);
        assert_eq!(
            value(
                &s,
                "rserpool_pe_removals_total",
                &[("reason", "keep_alive_timeout")]
            ),
            2.0
        );
        assert_eq!(value(&s, "rserpool_keep_alives_sent_total", &[]), 1.0);
        assert_eq!(value(&s, "rserpool_keep_alive_acks_total", &[]), 1.0);
        assert_eq!(value(&s, "rserpool_unreachable_reports_total", &[]), 1.0);
        assert_eq!(value(&s, "rserpool_rate_limited_total", &[]), 1.0);
        assert_eq!(
            value(
                &s,
                "rserpool_limit_refusals_total",
                &[("limit", "pes_per_pool")]
            ),
            1.0
        );
        let tcp = [("transport", "tcp")];
        assert_eq!(value(&s, "rserpool_connections_opened_total", &tcp), 2.0);
        assert_eq!(value(&s, "rserpool_connections_open", &tcp), 1.0);
        assert_eq!(value(&s, "rserpool_mailbox_forwards_total", &[]), 2.0);
        assert_eq!(value(&s, "rserpool_subscriptions", &[]), 3.0);
        assert_eq!(value(&s, "rserpool_subscriptions_accepted_total", &[]), 2.0);
        let refused = |limit| {
            value(
                &s,
                "rserpool_subscriptions_refused_total",
                &[("limit", limit)],
            )
        };
        assert_eq!((refused("per_association"), refused("total")), (0.0, 1.0));
        assert_eq!(value(&s, "rserpool_subscription_pushes_total", &[]), 1.0);
        assert_eq!(value(&s, "rserpool_pools", &[]), 7.0);
        assert_eq!(value(&s, "rserpool_pool_elements", &[]), 30.0);
        let w = |n| [("worker", n)];
        assert_eq!(
            value(&s, "rserpool_worker_busy_seconds_total", &w("0")),
            1.5
        );
        assert_eq!(
            value(&s, "rserpool_worker_busy_seconds_total", &w("1")),
            2.0
        );
        assert_eq!(
            value(&s, "rserpool_worker_idle_seconds_total", &w("0")),
            0.00025
        );
        assert_eq!(value(&s, "rserpool_worker_events_total", &w("0")), 7.0);
        assert_eq!(value(&s, "rserpool_worker_events_total", &w("1")), 1.0);
        assert_eq!(
            value(
                &s,
                "rserpool_registrar_info",
                &[
                    ("pr_id", "0x0000002a"),
                    ("version", "0.1.0"),
                    ("driver", "epoll")
                ]
            ),
            1.0
        );
        assert_eq!(value(&s, "rserpool_start_time_seconds", &[]), 1.7e9);
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_count_every_observation() {
        let a = Arc::new(WorkerMetrics::new(0));
        let b = Arc::new(WorkerMetrics::new(1));
        for nanos in [1_000, 5_000, 7_000, 300_000, 20_000_000] {
            a.latencies(RequestKind::Registration, nanos, 1);
        }
        b.latencies(RequestKind::Registration, 9_000, 1);
        // A turn of three resolutions: three observations.
        b.latencies(RequestKind::Resolution, 1, 3);

        let s = parse(&rendered(&[a, b], &info()));
        let bucket = |kind, le| {
            value(
                &s,
                "rserpool_request_duration_seconds_bucket",
                &[("kind", kind), ("le", le)],
            )
        };
        assert_eq!(bucket("registration", "0.000005"), 2.0);
        assert_eq!(bucket("registration", "0.00001"), 4.0);
        assert_eq!(bucket("registration", "0.00025"), 4.0);
        assert_eq!(bucket("registration", "0.0005"), 5.0);
        assert_eq!(bucket("registration", "0.01"), 5.0);
        assert_eq!(bucket("registration", "+Inf"), 6.0);
        assert_eq!(bucket("resolution", "0.000005"), 3.0);
        assert_eq!(bucket("other", "+Inf"), 0.0);
        let reg = [("kind", "registration")];
        assert_eq!(
            value(&s, "rserpool_request_duration_seconds_count", &reg),
            6.0
        );
        assert_eq!(
            value(&s, "rserpool_request_duration_seconds_sum", &reg),
            0.020322
        );

        for kind in RequestKind::ALL {
            let les: Vec<&Sample> = s
                .iter()
                .filter(|x| {
                    x.name == "rserpool_request_duration_seconds_bucket"
                        && x.labels
                            .iter()
                            .any(|(k, v)| k == "kind" && v == kind.label())
                })
                .collect();
            assert_eq!(les.len(), LATENCY_BOUNDS_NANOS.len() + 1);
            let bounds: Vec<f64> = les
                .iter()
                .map(|x| x.labels.iter().find(|(k, _)| k == "le").unwrap().1.parse())
                .collect::<Result<_, _>>()
                .unwrap();
            assert!(bounds.windows(2).all(|w| w[0] < w[1]), "{bounds:?}");
            assert!(les.windows(2).all(|w| w[0].value <= w[1].value));
            let count = value(
                &s,
                "rserpool_request_duration_seconds_count",
                &[("kind", kind.label())],
            );
            assert_eq!(les.last().unwrap().value, count);
        }
    }

    #[test]
    fn every_family_has_one_help_and_type_and_every_line_parses() {
        let text = rendered(&[Arc::new(WorkerMetrics::new(0))], &info());
        let samples = parse(&text);
        let types: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .collect();
        assert_eq!(types.len(), 41, "{types:?}");
        for family in [
            "rserpool_messages_received_total counter",
            "rserpool_connections_open gauge",
            "rserpool_request_duration_seconds histogram",
            "rserpool_registrar_info gauge",
            "rserpool_config_last_reload_successful gauge",
        ] {
            assert!(types.contains(&family), "{family} missing");
        }
        let labels = |name: &str, label: &str| -> Vec<String> {
            samples
                .iter()
                .filter(|s| s.name == name)
                .map(|s| {
                    s.labels
                        .iter()
                        .map(|(k, v)| {
                            if k == label {
                                v.clone()
                            } else {
                                format!("{k}={v}")
                            }
                        })
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .collect()
        };
        // Received: the 6 ASAP types a PR takes from PEs and PUs, every ENRP type, and unknown
        // codes of both protocols; sent: the 6 ASAP types a PR sends and every ENRP type.
        let received = labels("rserpool_messages_received_total", "type");
        assert_eq!(received.len(), 6 + 1 + 10 + 1, "{received:?}");
        for absent in [
            "protocol=asap,cookie",
            "protocol=asap,registration_response",
        ] {
            assert!(!received.contains(&absent.to_owned()), "{absent}");
        }
        let sent = labels("rserpool_messages_sent_total", "type");
        assert_eq!(sent.len(), 6 + 10, "{sent:?}");
        for absent in ["protocol=asap,registration", "protocol=enrp,unknown"] {
            assert!(!sent.contains(&absent.to_owned()), "{absent}");
        }
        assert_eq!(
            labels("rserpool_decode_errors_total", "cause"),
            [
                "dropped",
                "unrecognized_parameter",
                "unrecognized_message",
                "invalid_values"
            ]
        );
        assert_eq!(
            labels("rserpool_registrations_total", "result"),
            [
                "accepted",
                "invalid_values",
                "inconsistent_policy",
                "lack_of_resources",
                "inconsistent_transport",
                "inconsistent_data_control",
                "rejected_security"
            ]
        );
        assert_eq!(
            labels("rserpool_deregistrations_total", "result"),
            ["accepted", "rejected_security"]
        );
        assert_eq!(
            labels("rserpool_connections_open", "transport"),
            ["sctp", "tcp", "mptcp", "sctp_udp"]
        );
        assert_eq!(
            labels("rserpool_sctp_udp_packets_total", "outcome"),
            [
                "handshake_reply",
                "out_of_the_blue",
                "dropped",
                "reply_dropped",
                "refused_full",
                "peer_restart"
            ]
        );
        assert_eq!(
            labels("rserpool_limit_refusals_total", "limit").len(),
            Limit::ALL.len()
        );
        assert_eq!(
            value(&samples, "rserpool_config_last_reload_successful", &[]),
            1.0
        );
    }

    #[test]
    fn a_series_that_cannot_move_appears_once_counted_anyway() {
        let w = Arc::new(WorkerMetrics::new(0));
        w.message_in(Protocol::Asap, asap::COOKIE);
        w.message_out(Protocol::Enrp, 0x7f);
        w.decode_error(Some(cause::UNKNOWN_POOL_HANDLE));
        w.registration(Some(0x1234));
        w.connection_opened(TransportLabel::Udp);
        w.config_reloaded(false);
        let s = parse(&rendered(&[w], &info()));
        let asap = |ty| [("protocol", "asap"), ("type", ty)];
        assert_eq!(
            value(&s, "rserpool_messages_received_total", &asap("cookie")),
            1.0
        );
        assert_eq!(
            value(
                &s,
                "rserpool_messages_sent_total",
                &[("protocol", "enrp"), ("type", "unknown")]
            ),
            1.0
        );
        assert_eq!(
            value(
                &s,
                "rserpool_decode_errors_total",
                &[("cause", "unknown_pool_handle")]
            ),
            1.0
        );
        assert_eq!(
            value(&s, "rserpool_registrations_total", &[("result", "other")]),
            1.0
        );
        let udp = [("transport", "udp")];
        assert_eq!(value(&s, "rserpool_connections_opened_total", &udp), 1.0);
        assert_eq!(value(&s, "rserpool_connections_open", &udp), 1.0);
        assert!(
            !s.iter()
                .any(|x| x.labels.iter().any(|(_, v)| v == "business_card")),
            "only what was counted appears"
        );
        assert_eq!(value(&s, "rserpool_config_reload_failures_total", &[]), 1.0);
        assert_eq!(
            value(&s, "rserpool_config_last_reload_successful", &[]),
            0.0
        );
    }

    #[test]
    fn no_workers_renders_zeros() {
        let s = parse(&rendered(&[], &info()));
        assert_eq!(value(&s, "rserpool_pools", &[]), 0.0);
        assert!(!s.iter().any(|x| x.name == "rserpool_worker_events_total"));
    }

    #[test]
    fn label_values_are_escaped() {
        let info = ProcessInfo {
            version: "1.0 \"beta\" C:\\x\nnext",
            driver: "io_uring",
            ..info()
        };
        let text = rendered(&[], &info);
        assert!(
            text.contains(r#"version="1.0 \"beta\" C:\\x\nnext""#),
            "{text}"
        );
        let s = parse(&text);
        let v = value(
            &s,
            "rserpool_registrar_info",
            &[
                ("pr_id", "0x0000002a"),
                ("version", info.version),
                ("driver", "io_uring"),
            ],
        );
        assert_eq!(v, 1.0);
    }

    #[test]
    fn the_parser_rejects_malformed_lines() {
        for bad in [
            "1abc 1",
            "abc",
            "abc{x=\"1\" 1",
            "abc{x=1} 1",
            "abc{x=\"1\"y=\"2\"} 1",
            "abc{x=\"\\q\"} 1",
            "abc{9x=\"1\"} 1",
            "abc  1",
            "abc one",
        ] {
            assert!(parse_sample(bad).is_err(), "accepted `{bad}`");
        }
        let ok = parse_sample(r#"a_b:c{x="1",y="q\"\\"} -2.5e-3"#).unwrap();
        assert_eq!(ok.labels[1].1, "q\"\\");
        assert_eq!(ok.value, -0.0025);
    }

    #[test]
    fn seconds_are_exact_decimals() {
        assert_eq!(Seconds(0).to_string(), "0");
        assert_eq!(Seconds(5_000).to_string(), "0.000005");
        assert_eq!(Seconds(2_500_000).to_string(), "0.0025");
        assert_eq!(Seconds(1_000_000_001).to_string(), "1.000000001");
        assert_eq!(Seconds(3_000_000_000).to_string(), "3");
        assert_eq!(Seconds(u64::MAX).to_string(), "18446744073.709551615");
    }
}
