//! The files in `deploy/` that operators install: the systemd unit passes
//! `systemd-analyze verify` (Debian's `systemd` package, which `.ci/run` installs), with its
//! `ExecStart=` pointed at the binary under test.

use std::process::Command;

#[test]
fn the_systemd_unit_verifies() {
    let unit = include_str!("../../deploy/systemd/rserpool-registrar.service");
    assert!(unit.contains("Type=notify") && unit.contains("WatchdogSec="));
    let bin = env!("CARGO_BIN_EXE_rserpool-registrar");
    let dir = std::env::temp_dir().join(format!("rserpool-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("rserpool-registrar.service");
    std::fs::write(&path, unit.replace("/usr/bin/rserpool-registrar", bin)).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze (Debian package systemd) runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        !stderr.contains("rserpool-registrar.service:"),
        "warnings about the unit: {stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
