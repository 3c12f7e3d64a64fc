//! The `process_*` metrics Prometheus client libraries export (CPU time, memory, file
//! descriptors, threads, start time), read from `/proc/self` at each scrape: what an operator's
//! standard dashboards and alerts expect of any daemon.

use std::fmt::Write as _;

/// Clock ticks per second of `/proc/self/stat`'s CPU times (Linux's `USER_HZ`, 100 on every
/// architecture it runs on).
const USER_HZ: f64 = 100.0;

/// Appends the `process_*` families; `started_unix_secs` is the process's start time.
pub fn render(out: &mut String, started_unix_secs: u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = |field: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
    };
    let mut family = |name: &str, kind: &str, help: &str, value: Option<f64>| {
        if let Some(value) = value {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
    };
    family(
        "process_cpu_seconds_total",
        "counter",
        "Total user and system CPU time spent in seconds.",
        cpu_seconds(),
    );
    family(
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory size in bytes.",
        kib("VmRSS:").map(|k| (k * 1024) as f64),
    );
    family(
        "process_virtual_memory_bytes",
        "gauge",
        "Virtual memory size in bytes.",
        kib("VmSize:").map(|k| (k * 1024) as f64),
    );
    family(
        "process_threads",
        "gauge",
        "Number of OS threads in the process.",
        kib("Threads:").map(|n| n as f64),
    );
    family(
        "process_open_fds",
        "gauge",
        "Number of open file descriptors.",
        std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|d| d.count() as f64),
    );
    family(
        "process_max_fds",
        "gauge",
        "Maximum number of open file descriptors (the soft limit).",
        max_fds(),
    );
    family(
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since unix epoch in seconds.",
        Some(started_unix_secs as f64),
    );
}

/// User plus system time from `/proc/self/stat` (fields 14 and 15, after the command name in
/// parentheses, which may itself hold spaces and parentheses).
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): utime is field 14, stime field 15.
    let ticks = |i: usize| fields.get(i - 3)?.parse::<u64>().ok();
    Some((ticks(14)? + ticks(15)?) as f64 / USER_HZ)
}

/// The soft limit of "Max open files" in `/proc/self/limits`.
fn max_fds() -> Option<f64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse::<u64>()
        .ok()
        .map(|n| n as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_process_families_have_plausible_values() {
        let mut out = String::new();
        render(&mut out, 1_700_000_000);
        let value = |name: &str| -> f64 {
            out.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
                .unwrap_or_else(|| panic!("no {name} in\n{out}"))
                .parse()
                .unwrap()
        };
        assert!(value("process_resident_memory_bytes") > 1e6);
        assert!(value("process_virtual_memory_bytes") >= value("process_resident_memory_bytes"));
        assert!(value("process_open_fds") >= 3.0);
        assert!(value("process_max_fds") >= value("process_open_fds"));
        assert!(value("process_threads") >= 1.0);
        assert!(value("process_cpu_seconds_total") >= 0.0);
        assert_eq!(value("process_start_time_seconds"), 1.7e9);
        assert_eq!(out.matches("# TYPE ").count(), 7);
    }
}
