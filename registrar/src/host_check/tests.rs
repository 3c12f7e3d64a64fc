//! Each check against a faked `/proc` and `/sys` tree: the finding it reports when the host fits
//! the configuration and when it does not.

use std::path::{Path, PathBuf};

use super::*;
use crate::config::{Config, Layers, Overrides};

/// A faked root in a fresh temporary directory, removed when dropped.
struct Tree(PathBuf);

impl Tree {
    fn new(name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("rserpool-host-check-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn file(self, path: &str, text: &str) -> Self {
        let p = self.0.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
        self
    }

    fn dir(self, path: &str) -> Self {
        std::fs::create_dir_all(self.0.join(path)).unwrap();
        self
    }

    fn host(&self) -> Host {
        Host::faked(Path::new(&self.0))
    }

    /// A two-CPU host that fits the `default` profile.
    fn two_cpus(name: &str) -> Self {
        Self::new(name)
            .file("sys/devices/system/cpu/online", "0-1\n")
            .file(
                "proc/self/status",
                "Name:\tx\nSeccomp:\t0\nCpus_allowed_list:\t0-1\n",
            )
            .file("proc/sys/kernel/io_uring_disabled", "0\n")
            .file("proc/sys/net/core/somaxconn", "4096\n")
            .file("proc/sys/net/mptcp/enabled", "1\n")
            .dir("proc/sys/net/sctp")
            .file(
                "proc/self/limits",
                "Limit                     Soft Limit           Hard Limit           Units\n\
                 Max open files            1024                 1048576              files\n",
            )
            .file(
                "sys/kernel/mm/transparent_hugepage/enabled",
                "always [madvise] never\n",
            )
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn profile(name: &str) -> Config {
    Config::load(&Layers {
        profile: name.to_owned(),
        file: None,
        overrides: Overrides::default(),
    })
    .unwrap()
}

fn finding<'a>(findings: &'a [Finding], check: &str) -> &'a Finding {
    findings
        .iter()
        .find(|f| f.check == check)
        .unwrap_or_else(|| panic!("no `{check}` finding in {findings:#?}"))
}

#[test]
fn the_default_profile_fits_a_two_cpu_host() {
    let tree = Tree::two_cpus("fits");
    let findings = check(&profile("default"), &tree.host());
    let bad: Vec<&Finding> = findings
        .iter()
        .filter(|f| f.severity > Severity::Note)
        .collect();
    assert!(bad.is_empty(), "{bad:#?}");
    assert_eq!(
        finding(&findings, "workers and cores").current,
        "2 workers; this process may use CPUs 0-1 (2 usable)"
    );
    assert_eq!(finding(&findings, "kernel SCTP").severity, Severity::Ok);
    assert_eq!(finding(&findings, "kernel MPTCP").severity, Severity::Ok);
    assert!(render(&findings).ends_with("0 errors, 0 warnings, 0 notes\n"));
}

#[test]
fn spinning_workers_on_every_usable_core_are_reported() {
    // Spinning workers, one per core, on a two-core machine.
    let tree = Tree::two_cpus("spin");
    let mut spinning = profile("low-latency");
    spinning.registrar.busy_poll_us = 50;
    let findings = check(&spinning, &tree.host());
    let f = finding(&findings, "busy polling on shared cores");
    assert_eq!(f.severity, Severity::Warning);
    assert!(f.current.contains("busy_poll_us = 50"), "{}", f.current);
    assert!(f.fix.contains("busy_poll_us = 0"), "{}", f.fix);
    // With a core left free (taskset -c 0-2 on a four-CPU host, two workers) it is fine.
    let tree = Tree::two_cpus("spin-free")
        .file("sys/devices/system/cpu/online", "0-3\n")
        .file("proc/self/status", "Seccomp:\t0\nCpus_allowed_list:\t0-2\n");
    spinning.registrar.workers = 2;
    let findings = check(&spinning, &tree.host());
    assert_eq!(
        finding(&findings, "workers and cores").severity,
        Severity::Ok
    );
}

#[test]
fn pinned_workers_on_every_usable_core_are_a_note() {
    let tree = Tree::two_cpus("pinned-all");
    // low-latency pins one worker per core: fine on a dedicated host, worth saying.
    let f = finding(
        &check(&profile("low-latency"), &tree.host()),
        "workers and cores",
    )
    .clone();
    assert_eq!(f.severity, Severity::Note);
    assert!(
        f.current.ends_with("registrar.pin_workers = true"),
        "{}",
        f.current
    );
    let mut one = profile("low-latency");
    one.registrar.workers = 1;
    assert_eq!(
        finding(&check(&one, &tree.host()), "workers and cores").severity,
        Severity::Ok
    );
}

#[test]
fn more_workers_than_a_cgroup_quota_allows_are_reported() {
    let tree = Tree::two_cpus("quota").file("sys/fs/cgroup/cpu.max", "100000 100000\n");
    let mut config = profile("default");
    config.registrar.workers = 2;
    let f = finding(&check(&config, &tree.host()), "workers and cores").clone();
    assert_eq!(f.severity, Severity::Warning);
    assert!(
        f.current.contains("quota 1.0 CPUs (1 usable)"),
        "{}",
        f.current
    );
    // workers = 0 follows the quota.
    let findings = check(&profile("default"), &tree.host());
    assert!(
        finding(&findings, "workers and cores")
            .current
            .starts_with("1 workers")
    );
}

#[test]
fn missing_sctp_is_an_error_unless_skipped_and_missing_mptcp_likewise() {
    let tree = Tree::two_cpus("transports");
    std::fs::remove_dir(tree.0.join("proc/sys/net/sctp")).unwrap();
    std::fs::write(tree.0.join("proc/sys/net/mptcp/enabled"), "0\n").unwrap();
    let mut config = profile("carrier");
    config.asap.skip_unavailable = false;
    let findings = check(&config, &tree.host());
    assert_eq!(finding(&findings, "kernel SCTP").severity, Severity::Error);
    config.asap.skip_unavailable = true;
    config.enrp.skip_unavailable = true;
    let findings = check(&config, &tree.host());
    assert_eq!(
        finding(&findings, "kernel SCTP").severity,
        Severity::Warning
    );
    let default = check(&profile("default"), &tree.host());
    let mptcp = finding(&default, "kernel MPTCP");
    assert_eq!(mptcp.current, "net.mptcp.enabled = 0");
    assert!(mptcp.fix.contains("net.mptcp.enabled=1"));
}

#[test]
fn disabled_io_uring_is_a_warning_on_auto_and_an_error_when_required() {
    let tree = Tree::two_cpus("uring").file("proc/sys/kernel/io_uring_disabled", "2\n");
    let mut config = profile("default");
    assert_eq!(
        finding(&check(&config, &tree.host()), "io_uring").severity,
        Severity::Warning
    );
    config.registrar.driver = DriverChoice::IoUring;
    assert_eq!(
        finding(&check(&config, &tree.host()), "io_uring").severity,
        Severity::Error
    );
    config.registrar.driver = DriverChoice::Epoll;
    assert!(
        check(&config, &tree.host())
            .iter()
            .all(|f| f.check != "io_uring")
    );
    let seccomp = Tree::two_cpus("seccomp")
        .file("proc/self/status", "Seccomp:\t2\nCpus_allowed_list:\t0-1\n");
    assert_eq!(
        finding(&check(&profile("default"), &seccomp.host()), "io_uring").severity,
        Severity::Note
    );
}

#[test]
fn sysctl_caps_below_the_configuration_are_reported_with_the_line_to_fix_them() {
    let tree = Tree::two_cpus("sysctl")
        .file("proc/sys/net/core/somaxconn", "128\n")
        .file("proc/sys/net/core/rmem_max", "212992\n")
        .file("proc/sys/net/core/wmem_max", "8388608\n");
    let findings = check(&profile("carrier"), &tree.host());
    let somaxconn = finding(&findings, "net.core.somaxconn");
    assert_eq!(somaxconn.severity, Severity::Warning);
    assert_eq!(somaxconn.fix, "sysctl -w net.core.somaxconn=4096");
    let rmem = finding(&findings, "net.core.rmem_max");
    assert_eq!(rmem.severity, Severity::Warning);
    assert_eq!(rmem.fix, "sysctl -w net.core.rmem_max=4194304");
    assert_eq!(
        finding(&findings, "net.core.wmem_max").severity,
        Severity::Ok
    );
}

#[test]
fn an_open_file_limit_below_the_connections_is_reported() {
    let tree = Tree::two_cpus("nofile").file(
        "proc/self/limits",
        "Max open files            1024                 4096                 files\n",
    );
    // carrier: 65 536 connections per worker.
    let f = finding(
        &check(&profile("carrier"), &tree.host()),
        "open files (RLIMIT_NOFILE)",
    )
    .clone();
    assert_eq!(f.severity, Severity::Warning);
    assert!(f.fix.contains("LimitNOFILE=131136"), "{}", f.fix);
    assert_eq!(
        finding(
            &check(&profile("default"), &tree.host()),
            "open files (RLIMIT_NOFILE)"
        )
        .severity,
        Severity::Ok
    );
}

#[test]
fn pinned_workers_see_the_governor_and_nic_interrupts_on_their_cores() {
    let tree = Tree::two_cpus("pinned")
        .file(
            "sys/devices/system/cpu/cpu0/cpufreq/scaling_governor",
            "powersave\n",
        )
        .file(
            "sys/devices/system/cpu/cpu1/cpufreq/scaling_governor",
            "performance\n",
        )
        .dir("sys/class/net/lo")
        .dir("sys/class/net/eth0/device/msi_irqs/24")
        .dir("sys/class/net/eth0/device/msi_irqs/25")
        .file("proc/irq/24/smp_affinity_list", "1\n")
        .file("proc/irq/25/smp_affinity_list", "2-3\n");
    let mut config = profile("carrier");
    config.asap.skip_unavailable = true;
    let findings = check(&config, &tree.host());
    let governor = finding(&findings, "CPU frequency governor");
    assert_eq!(governor.severity, Severity::Warning);
    assert_eq!(governor.current, "cpu0: powersave");
    let irqs = finding(&findings, "NIC interrupts");
    assert_eq!(irqs.severity, Severity::Warning);
    assert_eq!(irqs.current, "eth0 IRQ 24 on CPUs 1");
    // Not pinned, not spinning: neither is looked at.
    let findings = check(&profile("default"), &tree.host());
    assert!(
        findings
            .iter()
            .all(|f| f.check != "NIC interrupts" && f.check != "CPU frequency governor")
    );
}

#[test]
fn always_on_huge_pages_are_a_note() {
    let tree = Tree::two_cpus("thp").file(
        "sys/kernel/mm/transparent_hugepage/enabled",
        "[always] madvise never\n",
    );
    let f = finding(
        &check(&profile("default"), &tree.host()),
        "transparent huge pages",
    )
    .clone();
    assert_eq!(f.severity, Severity::Note);
    assert!(render(&[f]).contains("fix: echo madvise"));
}

#[test]
fn cpu_lists_read_and_write_as_the_kernel_does() {
    assert_eq!(cpu_list("0-3,8,10-11"), [0, 1, 2, 3, 8, 10, 11]);
    assert_eq!(cpu_list_text(&[0, 1, 2, 3, 8, 10, 11]), "0-3,8,10-11");
    assert_eq!(cpu_list(""), Vec::<usize>::new());
    assert_eq!(cpu_list("x,2"), [2]);
}

/// The sysctl drop-ins of `tuning/sysctl.d/`, by profile.
const DROP_INS: [(&str, &str); 3] = [
    (
        "default",
        include_str!("../../tuning/sysctl.d/60-rserpool-default.conf"),
    ),
    (
        "low-latency",
        include_str!("../../tuning/sysctl.d/60-rserpool-low-latency.conf"),
    ),
    (
        "carrier",
        include_str!("../../tuning/sysctl.d/60-rserpool-carrier.conf"),
    ),
];

#[test]
fn each_profiles_sysctl_drop_in_clears_its_sysctl_findings() {
    for (name, drop_in) in DROP_INS {
        // A host with the kernel's smallest defaults, then the drop-in's values.
        let mut tree = Tree::two_cpus(&format!("drop-in-{name}"))
            .file("proc/sys/net/core/somaxconn", "128\n")
            .file("proc/sys/net/core/rmem_max", "212992\n")
            .file("proc/sys/net/core/wmem_max", "212992\n")
            .file("proc/sys/net/mptcp/enabled", "0\n");
        let mut keys = 0;
        for line in drop_in.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (key, value) = line.split_once('=').expect("key = value");
            let path = format!("proc/sys/{}", key.trim().replace('.', "/"));
            tree = tree.file(&path, &format!("{}\n", value.trim()));
            keys += 1;
        }
        assert!(keys > 0, "{name}: an empty drop-in");
        let mut config = profile(name);
        config.asap.skip_unavailable = true;
        config.enrp.skip_unavailable = true;
        let findings = check(&config, &tree.host());
        for check in [
            "net.core.somaxconn",
            "net.core.rmem_max",
            "net.core.wmem_max",
            "kernel MPTCP",
        ] {
            if let Some(f) = findings.iter().find(|f| f.check == check) {
                assert_eq!(f.severity, Severity::Ok, "{name}: {f:?}");
            }
        }
    }
}
