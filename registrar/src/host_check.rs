//! `--check-host`: this host against the effective configuration. Each check reads what the
//! kernel exposes under `/proc` and `/sys` (below a root that tests replace with a faked tree)
//! and, on the real host, probes the sockets and io_uring the configuration needs. A finding
//! says what the host has now, why it matters and how to fix it; errors stop the registrar from
//! starting, warnings cost performance or robustness. The daemon logs the warnings at start.

use std::fmt::Write as _;
use std::path::PathBuf;

use rserpool_net::Transport;

use crate::config::{Config, DriverChoice};

/// How much a finding matters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// The host fits the configuration.
    Ok,
    /// Worth knowing; nothing to fix for this configuration.
    Note,
    /// The registrar runs, but slower or less robust than the configuration means it to.
    Warning,
    /// The registrar will not start (or not serve what is configured) on this host.
    Error,
}

impl Severity {
    fn label(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Note => "note",
            Self::Warning => "warning",
            Self::Error => "error",
        }
    }
}

/// One check's result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// What was checked, e.g. `"net.core.somaxconn"`.
    pub check: &'static str,
    /// How much it matters.
    pub severity: Severity,
    /// What the host has now.
    pub current: String,
    /// Why it matters for this configuration (empty when it is fine).
    pub why: String,
    /// What to do (empty when it is fine).
    pub fix: String,
}

impl Finding {
    fn ok(check: &'static str, current: impl Into<String>) -> Self {
        Self {
            check,
            severity: Severity::Ok,
            current: current.into(),
            why: String::new(),
            fix: String::new(),
        }
    }

    fn bad(
        check: &'static str,
        severity: Severity,
        current: impl Into<String>,
        why: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self {
            check,
            severity,
            current: current.into(),
            why: why.into(),
            fix: fix.into(),
        }
    }
}

/// The host to check: the root its `/proc` and `/sys` are read under, and whether the real
/// sockets and io_uring may be probed (only on the host itself).
#[derive(Clone, Debug)]
pub struct Host {
    root: PathBuf,
    probe: bool,
}

impl Host {
    /// This machine, probed.
    pub fn this() -> Self {
        Self {
            root: PathBuf::from("/"),
            probe: true,
        }
    }

    /// This machine, read only (`/proc` and `/sys`, nothing opened): for the daemon's start,
    /// which probes the transports and io_uring itself when it opens them.
    pub fn this_unprobed() -> Self {
        Self {
            root: PathBuf::from("/"),
            probe: false,
        }
    }

    /// A faked tree under `root` (`root/proc/...`, `root/sys/...`), without probes.
    pub fn faked(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            probe: false,
        }
    }

    fn read(&self, path: &str) -> Option<String> {
        std::fs::read_to_string(self.root.join(path))
            .ok()
            .map(|s| s.trim().to_owned())
    }

    fn exists(&self, path: &str) -> bool {
        self.root.join(path).exists()
    }

    fn list(&self, path: &str) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.root.join(path))
            .map(|d| {
                d.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    fn number(&self, path: &str) -> Option<u64> {
        self.read(path)?.parse().ok()
    }

    /// A field of `/proc/self/status`, e.g. `Cpus_allowed_list`.
    fn status_field(&self, field: &str) -> Option<String> {
        self.read("proc/self/status")?.lines().find_map(|l| {
            let (name, value) = l.split_once(':')?;
            (name == field).then(|| value.trim().to_owned())
        })
    }
}

/// A kernel CPU list such as `0-3,8,10-11`.
fn cpu_list(text: &str) -> Vec<usize> {
    let mut cpus = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<usize>(), b.parse::<usize>()) {
                    cpus.extend(a..=b.min(a + 4096));
                }
            }
            None => cpus.extend(part.parse::<usize>().ok()),
        }
    }
    cpus
}

/// Writes a CPU list back in the kernel's form.
fn cpu_list_text(cpus: &[usize]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < cpus.len() {
        let start = cpus[i];
        while i + 1 < cpus.len() && cpus[i + 1] == cpus[i] + 1 {
            i += 1;
        }
        if !out.is_empty() {
            out.push(',');
        }
        if cpus[i] == start {
            let _ = write!(out, "{start}");
        } else {
            let _ = write!(out, "{start}-{}", cpus[i]);
        }
        i += 1;
    }
    out
}

/// The CPUs this process may use and how many it may keep busy (a cgroup quota may allow fewer
/// than the mask has).
struct Cpus {
    allowed: Vec<usize>,
    usable: usize,
    quota: Option<f64>,
}

fn cpus(host: &Host) -> Cpus {
    let online = host
        .read("sys/devices/system/cpu/online")
        .map(|t| cpu_list(&t))
        .unwrap_or_default();
    let allowed = host
        .status_field("Cpus_allowed_list")
        .map(|t| cpu_list(&t))
        .filter(|c| !c.is_empty())
        .unwrap_or(online);
    let quota = host.read("sys/fs/cgroup/cpu.max").and_then(|t| {
        let mut parts = t.split_whitespace();
        let max = parts.next()?.parse::<f64>().ok()?;
        let period = parts.next()?.parse::<f64>().ok()?;
        (period > 0.0).then_some(max / period)
    });
    let mut usable = allowed.len().max(1);
    if let Some(q) = quota {
        usable = usable.min((q.ceil() as usize).max(1));
    }
    Cpus {
        allowed,
        usable,
        quota,
    }
}

/// Checks `host` against `config`; the findings in the order of the checks.
pub fn check(config: &Config, host: &Host) -> Vec<Finding> {
    let mut findings = Vec::new();
    transports(config, host, &mut findings);
    io_uring(config, host, &mut findings);
    sysctl_limits(config, host, &mut findings);
    let cpus = cpus(host);
    let workers = match config.registrar.workers {
        0 => cpus.usable,
        n => n,
    };
    open_files(config, host, workers, &mut findings);
    cores(config, &cpus, workers, &mut findings);
    transparent_huge_pages(host, &mut findings);
    if config.registrar.pin_workers || config.registrar.busy_poll_us > 0 {
        let worker_cpus: Vec<usize> = cpus.allowed.iter().copied().take(workers).collect();
        governor(host, &worker_cpus, &mut findings);
        if config.registrar.pin_workers {
            nic_irqs(host, &worker_cpus, &mut findings);
        }
    }
    findings
}

/// Kernel SCTP and MPTCP, where a listener needs them.
fn transports(config: &Config, host: &Host, findings: &mut Vec<Finding>) {
    let uses = |t: Transport| {
        let asap = config.asap.listen.iter().any(|u| u.transport == t);
        let enrp = config
            .enrp
            .listen
            .iter()
            .chain(&config.enrp.peers)
            .any(|u| u.transport == t);
        (asap, enrp)
    };
    let severity = |(asap, enrp): (bool, bool)| {
        let skipped =
            (!asap || config.asap.skip_unavailable) && (!enrp || config.enrp.skip_unavailable);
        if skipped {
            Severity::Warning
        } else {
            Severity::Error
        }
    };
    let sctp = uses(Transport::Sctp);
    if sctp.0 || sctp.1 {
        let mut present = host.exists("proc/sys/net/sctp");
        if !present && host.probe {
            present = rserpool_net::sctp_support().is_ok();
        }
        findings.push(if present {
            Finding::ok("kernel SCTP", "available")
        } else {
            Finding::bad(
                "kernel SCTP",
                severity(sctp),
                "not available (no /proc/sys/net/sctp)",
                "sctp:// listeners or peers are configured: RSPLIB's PEs, PUs and registrars speak \
                 SCTP",
                "load the module (`modprobe sctp`; on some distributions it is in \
                 linux-modules-extra), allow it in containers, or remove the sctp:// URLs",
            )
        });
    }
    let mptcp = uses(Transport::Mptcp);
    if mptcp.0 || mptcp.1 {
        let enabled = host.read("proc/sys/net/mptcp/enabled");
        let mut present = enabled.as_deref() == Some("1");
        if enabled.is_none() && host.probe {
            present = socket2::Socket::new(
                socket2::Domain::IPV4,
                socket2::Type::STREAM,
                Some(socket2::Protocol::from(262)),
            )
            .is_ok();
        }
        findings.push(if present {
            Finding::ok("kernel MPTCP", "enabled")
        } else {
            Finding::bad(
                "kernel MPTCP",
                severity(mptcp),
                format!(
                    "net.mptcp.enabled = {}",
                    enabled.as_deref().unwrap_or("absent (no MPTCP in this kernel)")
                ),
                "mptcp:// listeners or peers are configured",
                "sysctl -w net.mptcp.enabled=1 (Linux 5.6 or later built with CONFIG_MPTCP), or use \
                 tcp:// instead",
            )
        });
    }
}

/// Whether io_uring is allowed (`kernel.io_uring_disabled`, a seccomp filter).
fn io_uring(config: &Config, host: &Host, findings: &mut Vec<Finding>) {
    let choice = config.registrar.driver;
    if choice == DriverChoice::Epoll {
        return;
    }
    let severity = if choice == DriverChoice::IoUring {
        Severity::Error
    } else {
        Severity::Warning
    };
    let fallback = if choice == DriverChoice::IoUring {
        "registrar.driver = \"io_uring\" will not start"
    } else {
        "the registrar falls back to epoll, which costs throughput"
    };
    let disabled = host
        .number("proc/sys/kernel/io_uring_disabled")
        .unwrap_or(0);
    if disabled == 2 {
        findings.push(Finding::bad(
            "io_uring",
            severity,
            "kernel.io_uring_disabled = 2",
            format!("io_uring is disabled for every process: {fallback}"),
            "sysctl -w kernel.io_uring_disabled=0, or set registrar.driver = \"epoll\"",
        ));
        return;
    }
    if host.probe
        && let Err(e) = crate::driver::io_uring_support()
    {
        findings.push(Finding::bad(
            "io_uring",
            severity,
            e.to_string(),
            format!("io_uring is refused to this process: {fallback}"),
            "allow io_uring (kernel.io_uring_disabled = 0, a seccomp profile that permits \
             io_uring_setup, io_uring_enter and io_uring_register), or set registrar.driver = \
             \"epoll\"",
        ));
        return;
    }
    let seccomp = host.status_field("Seccomp").unwrap_or_default();
    if seccomp == "2" && !host.probe {
        findings.push(Finding::bad(
            "io_uring",
            Severity::Note,
            "a seccomp filter is active",
            "seccomp profiles such as Docker's default block io_uring; the start-up probe decides",
            "if the registrar logs that it fell back to epoll, allow io_uring in the profile",
        ));
        return;
    }
    findings.push(Finding::ok(
        "io_uring",
        format!("allowed (kernel.io_uring_disabled = {disabled})"),
    ));
}

/// `net.core.somaxconn` against the backlog, `rmem_max`/`wmem_max` against the socket buffers.
fn sysctl_limits(config: &Config, host: &Host, findings: &mut Vec<Finding>) {
    let backlog = u64::from(config.io.listen_backlog);
    if let Some(somaxconn) = host.number("proc/sys/net/core/somaxconn") {
        findings.push(if somaxconn >= backlog {
            Finding::ok(
                "net.core.somaxconn",
                format!("{somaxconn} (io.listen_backlog = {backlog})"),
            )
        } else {
            Finding::bad(
                "net.core.somaxconn",
                Severity::Warning,
                format!("{somaxconn}, below io.listen_backlog = {backlog}"),
                "the kernel caps every listen backlog at somaxconn: a burst of connections (every \
                 PE after a registrar restart) overflows it and clients retry after a second",
                format!("sysctl -w net.core.somaxconn={backlog}"),
            )
        });
    }
    let wanted = config.io.socket_buffer_bytes as u64;
    if wanted == 0 {
        return;
    }
    for (key, path) in [
        ("net.core.rmem_max", "proc/sys/net/core/rmem_max"),
        ("net.core.wmem_max", "proc/sys/net/core/wmem_max"),
    ] {
        let Some(max) = host.number(path) else {
            continue;
        };
        findings.push(if max >= wanted {
            Finding::ok(key, format!("{max} (io.socket_buffer_bytes = {wanted})"))
        } else {
            Finding::bad(
                key,
                Severity::Warning,
                format!("{max}, below io.socket_buffer_bytes = {wanted}"),
                "the kernel caps SO_RCVBUF and SO_SNDBUF at this value: the sockets get less \
                 buffer than configured",
                format!("sysctl -w {key}={wanted}"),
            )
        });
    }
}

/// The hard limit of open files against `limits.max_connections` × workers.
fn open_files(config: &Config, host: &Host, workers: usize, findings: &mut Vec<Finding>) {
    let Some(hard) = host.read("proc/self/limits").and_then(|t| {
        let line = t.lines().find(|l| l.starts_with("Max open files"))?;
        let mut fields = line["Max open files".len()..].split_whitespace();
        let _soft = fields.next()?;
        match fields.next()? {
            "unlimited" => Some(u64::MAX),
            n => n.parse::<u64>().ok(),
        }
    }) else {
        return;
    };
    // Listeners, rings, eventfds and the metrics endpoint need a few more.
    let wanted = (config.limits.max_connections as u64)
        .saturating_mul(workers as u64)
        .saturating_add(64);
    findings.push(if hard >= wanted {
        Finding::ok(
            "open files (RLIMIT_NOFILE)",
            format!("hard limit {hard}, for {wanted} (limits.max_connections x {workers} workers)"),
        )
    } else {
        Finding::bad(
            "open files (RLIMIT_NOFILE)",
            Severity::Warning,
            format!(
                "hard limit {hard}, below {wanted} (limits.max_connections x {workers} workers)"
            ),
            "every TCP connection and SCTP association needs a descriptor: beyond the limit \
             connections are refused and SCTP associations share their listener's socket",
            format!(
                "LimitNOFILE={wanted} in the systemd unit, or `ulimit -Hn {wanted}` before \
                 starting it; or lower limits.max_connections"
            ),
        )
    });
}

/// Workers against the cores this process may use; spinning on all of them.
fn cores(config: &Config, cpus: &Cpus, workers: usize, findings: &mut Vec<Finding>) {
    let quota = cpus
        .quota
        .map_or_else(String::new, |q| format!(", cgroup quota {q:.1} CPUs"));
    let current = format!(
        "{workers} workers; this process may use CPUs {}{quota} ({} usable)",
        cpu_list_text(&cpus.allowed),
        cpus.usable
    );
    if workers > cpus.usable {
        findings.push(Finding::bad(
            "workers and cores",
            Severity::Warning,
            current,
            "more workers than usable cores: they take turns on the cores, and a worker waiting \
             for its turn delays every association it owns",
            format!(
                "registrar.workers = 0 (one per usable core) or at most {}",
                cpus.usable
            ),
        ));
        return;
    }
    let busy_poll = config.registrar.busy_poll_us;
    if busy_poll > 0 && workers >= cpus.usable {
        findings.push(Finding::bad(
            "busy polling on shared cores",
            Severity::Warning,
            format!("{current}; registrar.busy_poll_us = {busy_poll}"),
            "every worker spins on its core when idle and the workers take all the cores this \
             process may use: whatever else runs on them (a load generator, other daemons, \
             interrupts) waits, and the tail latency grows (p99 four times default's with the \
             load on the same cores)",
            "give the registrar cores of its own (CPUAffinity= in the unit or taskset, other \
             work elsewhere, isolcpus) and fewer workers than those cores, or set \
             registrar.busy_poll_us = 0",
        ));
        return;
    }
    if config.registrar.pin_workers && workers >= cpus.usable {
        findings.push(Finding::bad(
            "workers and cores",
            Severity::Note,
            format!("{current}; registrar.pin_workers = true"),
            "pinned workers on every usable core suit a host dedicated to the registrar; other \
             load on these cores cannot move away from them (with the load generator on the same \
             cores, rserpool-bench sweep measured p99 5-9 times higher with pinning)",
            "keep other work off these cores, or set registrar.pin_workers = false",
        ));
        return;
    }
    findings.push(Finding::ok("workers and cores", current));
}

/// Transparent huge pages (informational: the registrar does not fork).
fn transparent_huge_pages(host: &Host, findings: &mut Vec<Finding>) {
    let Some(text) = host.read("sys/kernel/mm/transparent_hugepage/enabled") else {
        return;
    };
    findings.push(if text.contains("[always]") {
        Finding::bad(
            "transparent huge pages",
            Severity::Note,
            text,
            "always: the handlespace's many small allocations may be backed by 2 MiB pages, \
             which can raise RSS; latency is not affected (the registrar does not fork)",
            "echo madvise > /sys/kernel/mm/transparent_hugepage/enabled, if RSS matters",
        )
    } else {
        Finding::ok("transparent huge pages", text)
    });
}

/// The frequency governor of the workers' cores, with pinned or spinning workers.
fn governor(host: &Host, worker_cpus: &[usize], findings: &mut Vec<Finding>) {
    let mut slow = Vec::new();
    let mut seen = false;
    for &cpu in worker_cpus {
        let Some(g) = host.read(&format!(
            "sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_governor"
        )) else {
            continue;
        };
        seen = true;
        if g != "performance" {
            slow.push(format!("cpu{cpu}: {g}"));
        }
    }
    if !seen {
        findings.push(Finding::bad(
            "CPU frequency governor",
            Severity::Note,
            "not exposed (no cpufreq in /sys: a VM or a container)",
            "",
            "",
        ));
        return;
    }
    findings.push(if slow.is_empty() {
        Finding::ok(
            "CPU frequency governor",
            "performance on the workers' cores",
        )
    } else {
        Finding::bad(
            "CPU frequency governor",
            Severity::Warning,
            slow.join(", "),
            "pinned or spinning workers are meant for low latency; a power-saving governor \
             lowers the clock between bursts and the first requests of a burst pay for it",
            "cpupower frequency-set -g performance (or a tuned profile such as \
             latency-performance)",
        )
    });
}

/// NIC interrupts on the pinned workers' cores.
fn nic_irqs(host: &Host, worker_cpus: &[usize], findings: &mut Vec<Finding>) {
    let mut shared = Vec::new();
    let mut seen = false;
    for nic in host.list("sys/class/net") {
        if nic == "lo" {
            continue;
        }
        for irq in host.list(&format!("sys/class/net/{nic}/device/msi_irqs")) {
            let Some(list) = host.read(&format!("proc/irq/{irq}/smp_affinity_list")) else {
                continue;
            };
            seen = true;
            let on: Vec<usize> = cpu_list(&list)
                .into_iter()
                .filter(|c| worker_cpus.contains(c))
                .collect();
            if !on.is_empty() {
                shared.push(format!("{nic} IRQ {irq} on CPUs {list}"));
            }
        }
    }
    if !seen {
        findings.push(Finding::bad(
            "NIC interrupts",
            Severity::Note,
            "no NIC interrupt affinity readable",
            "",
            "",
        ));
        return;
    }
    findings.push(if shared.is_empty() {
        Finding::ok("NIC interrupts", "none on the pinned workers' cores")
    } else {
        Finding::bad(
            "NIC interrupts",
            Severity::Warning,
            shared.join("; "),
            "interrupts on a pinned worker's core preempt it: every packet's softirq runs before \
             the worker gets its core back",
            format!(
                "move them off CPUs {} (echo OTHER-CPUS > /proc/irq/N/smp_affinity_list, or \
                 IRQBALANCE_BANNED_CPULIST={} for irqbalance)",
                cpu_list_text(worker_cpus),
                cpu_list_text(worker_cpus)
            ),
        )
    });
}

/// The findings as `--check-host` prints them: one line per check, then why and the fix.
pub fn render(findings: &[Finding]) -> String {
    let mut out = String::new();
    for f in findings {
        let _ = writeln!(out, "{:<8} {}: {}", f.severity.label(), f.check, f.current);
        if !f.why.is_empty() {
            let _ = writeln!(out, "         why: {}", f.why);
        }
        if !f.fix.is_empty() {
            let _ = writeln!(out, "         fix: {}", f.fix);
        }
    }
    let count = |s: Severity| findings.iter().filter(|f| f.severity == s).count();
    let _ = writeln!(
        out,
        "{} errors, {} warnings, {} notes",
        count(Severity::Error),
        count(Severity::Warning),
        count(Severity::Note)
    );
    out
}

#[cfg(test)]
mod tests;
