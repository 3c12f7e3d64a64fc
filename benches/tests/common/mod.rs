//! What the end-to-end tests of `rserpool-bench` share: the daemon binaries they need (built next
//! to the test by `cargo test --workspace`), and running `rserpool-bench` itself for its JSON
//! report.

// Each test binary uses a different subset.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use rserpool_bench::target::default_registrar_bin;
use serde_json::Value;

/// The `rserpool-registrar` binary next to this test; fails the test with what to build when it
/// is missing.
pub fn registrar_bin() -> PathBuf {
    let bin = default_registrar_bin().expect("the test's own path");
    require(&bin, "rserpool-registrar");
    bin
}

/// The `rserpool` command line next to this test (see [`registrar_bin`]).
pub fn rserpool_bin() -> PathBuf {
    let bin = registrar_bin().with_file_name("rserpool");
    require(&bin, "rserpool-endpoint");
    bin
}

fn require(bin: &std::path::Path, package: &str) {
    assert!(
        bin.is_file(),
        "{} is missing: run `cargo build -p {package}` (with --release for a release test), or \
         `cargo test --workspace`, before this test",
        bin.display()
    );
}

/// Runs `rserpool-bench` with `args`, `--json` and `--quiet`, its standard error captured.
pub fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rserpool-bench"))
        .args(args)
        .args(["--json", "--quiet"])
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("run rserpool-bench")
}

/// The JSON report of a run that must succeed (see [`run`]).
pub fn report(args: &[&str]) -> Value {
    parse(args, &run(args))
}

/// The JSON report of `out`, a run of `args` that must have succeeded.
pub fn parse(args: &[&str], out: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{args:?}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&stdout).expect("one JSON object")
}
