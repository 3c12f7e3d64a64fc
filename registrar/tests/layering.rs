//! The registrar's layering, checked on its source: the sans-I/O core (`src/core/`, tests
//! included) uses only `rserpool-protocol`, `rserpool-handlespace` and itself, never the drivers,
//! the sockets, the metrics exposition, the configuration or the command line (issue 15).

use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`, recursively.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read the source directory") {
        let path = entry.expect("read a directory entry").path();
        if path.is_dir() {
            files.extend(sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

/// The code of a line, without its `//` comment (no string in the core holds `//` before a path).
fn code(line: &str) -> &str {
    line.split("//").next().unwrap_or("")
}

/// What one line of core code names outside the core, if anything.
fn outside_paths(line: &str, depth: usize) -> Vec<String> {
    let mut found = Vec::new();
    let code = code(line);
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        let preceded = code[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_');
        if !preceded && !rest.starts_with("core") {
            found.push(format!(
                "crate::{}",
                rest.split([';', ',', ' ']).next().unwrap_or("")
            ));
        }
    }
    for (i, _) in code.match_indices("rserpool_") {
        let preceded = code[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_');
        let name: String = code[i..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        // A crate path (`rserpool_net::...`), not a metric name or another identifier.
        let is_path = code[i + name.len()..].starts_with("::");
        if !preceded && is_path && name != "rserpool_protocol" && name != "rserpool_handlespace" {
            found.push(name);
        }
    }
    // `super::` climbing above `src/core/` leaves the core.
    let climb = "super::".repeat(depth + 1);
    if code.contains(&climb) {
        found.push(climb);
    }
    found
}

#[test]
fn the_core_imports_only_protocol_handlespace_and_itself() {
    let core = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/core");
    let files = sources(&core);
    assert!(files.len() >= 5, "found the core's files: {files:?}");
    let mut violations = Vec::new();
    for file in &files {
        let relative = file.strip_prefix(&core).expect("under src/core");
        // The file's module depth below `core`: `core/mod.rs` is 0, `core/asap.rs` and
        // `core/enrp/mod.rs` are 1, `core/enrp/audit.rs` is 2.
        let components = relative.components().count();
        let depth = if file.file_name().is_some_and(|n| n == "mod.rs") {
            components - 1
        } else {
            components
        };
        let text = std::fs::read_to_string(file).expect("read a source file");
        for (n, line) in text.lines().enumerate() {
            for path in outside_paths(line, depth) {
                violations.push(format!("{}:{}: {path}", relative.display(), n + 1));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "the core reaches outside itself:\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_check_sees_what_it_forbids() {
    assert_eq!(
        outside_paths("use crate::metrics::Protocol;", 0),
        ["crate::metrics::Protocol"]
    );
    assert_eq!(
        outside_paths("    let x = rserpool_net::TransportUrl::parse(s);", 0),
        ["rserpool_net"]
    );
    assert_eq!(
        outside_paths("use super::super::driver;", 1),
        ["super::super::"]
    );
    assert!(outside_paths("use super::super::Worker;", 2).is_empty());
    assert!(outside_paths("use crate::core::counters::WorkerMetrics;", 0).is_empty());
    assert!(outside_paths("use rserpool_protocol::url::TransportUrl;", 0).is_empty());
    assert!(outside_paths("// see crate::driver for the sockets", 0).is_empty());
}
