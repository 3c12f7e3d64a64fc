//! The shell examples of `README.md` and `docs/*.md` against the binaries as built: every command
//! line that runs `rserpool-registrar`, `rserpool-bench` or `rserpool` (directly, through
//! `target/release/`, `taskset`, `ci/uml-run.sh`, or `cargo run -p rserpool-registrar --`) is
//! checked. A registrar command line must pass `--check-config`: its flags, their values and the
//! configuration they make (one that asks for `--check-host`, `--man-page` or `--completions` runs
//! as written). A bench or `rserpool` command line must parse: its scenario or
//! subcommand exists, every option is one that scenario takes, every value is valid; `--help`
//! appended at its end shows that, since the parser reads everything before it. A `for` loop's
//! body is checked once per value. Examples with
//! placeholders (`<...>`, `[options]`, `N`, `a|b`) or shell expansions cannot run as written and
//! are listed as skipped; the test fails if an example fails, or if fewer examples were checked
//! than the docs are known to hold.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository's root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The documents with examples.
fn documents() -> Vec<PathBuf> {
    let mut docs = vec![root().join("README.md")];
    let mut more: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    more.sort();
    docs.extend(more);
    docs
}

/// Where a line of a document is.
#[derive(Clone, Copy, PartialEq)]
enum Block {
    /// Not in a fenced block.
    Prose,
    /// In a `sh`, `bash` or `shell` block: every line is a command.
    Shell,
    /// In a `console` block: `$ ` lines are commands, the others their output.
    Console,
    /// In a block of anything else (text, TOML, output).
    Other,
}

/// The command lines of a document's shell blocks, backslash continuations joined; the body of a
/// `for VAR in A B C; do` ... `done` loop once per value, with `$VAR` replaced.
fn commands(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut block = Block::Prose;
    let mut pending = String::new();
    let mut looping: Option<(String, Vec<String>)> = None;
    for line in text.lines() {
        if block == Block::Shell && pending.is_empty() {
            let trimmed = line.trim();
            if let Some(head) = trimmed
                .strip_prefix("for ")
                .and_then(|l| l.strip_suffix("; do"))
                && let Some((var, values)) = head.split_once(" in ")
            {
                let values = values.split_whitespace().map(str::to_owned).collect();
                looping = Some((format!("${}", var.trim()), values));
                continue;
            }
            if trimmed == "done" {
                looping = None;
                continue;
            }
        }
        if let Some(info) = line.strip_prefix("```") {
            block = match (block, info.trim()) {
                (Block::Prose, "sh" | "bash" | "shell") => Block::Shell,
                (Block::Prose, "console") => Block::Console,
                (Block::Prose, _) => Block::Other,
                _ => Block::Prose,
            };
            pending.clear();
            continue;
        }
        let line = match block {
            Block::Prose | Block::Other => continue,
            Block::Shell => line,
            Block::Console if !pending.is_empty() => line,
            Block::Console => match line.strip_prefix("$ ") {
                Some(command) => command,
                None => continue,
            },
        };
        match line.strip_suffix('\\') {
            Some(start) => {
                pending.push_str(start);
                pending.push(' ');
            }
            None => {
                pending.push_str(line);
                let command = std::mem::take(&mut pending);
                match &looping {
                    Some((var, values)) => {
                        out.extend(values.iter().map(|v| command.replace(var.as_str(), v)));
                    }
                    None => out.push(command),
                }
            }
        }
    }
    out
}

/// Splits a command line into words as a shell would for the simple lines of the docs: single
/// and double quotes group, a word starting with `#` ends the line. `None` for a line with an
/// expansion (`$`), which only a shell can run.
fn words(line: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('"'), '$') => return None,
            (Some(_), c) => word.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, '$') => return None,
            (None, '#') if !in_word => break,
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Some(words)
}

/// The project binaries an example can run.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Binary {
    Registrar,
    Bench,
    Cli,
    /// One of the endpoint crate's examples (`cargo run -p rserpool-endpoint --example NAME`).
    Example,
}

/// What an example runs: the binary, the example's name for [`Binary::Example`], and its
/// arguments, after the wrappers (environment
/// assignments, `taskset -c N`, `ci/uml-run.sh`, `sudo`, `cargo run ... --`), up to a pipe, a
/// redirection, `&&`, `;` or a trailing `&`. `None` when it runs none of the project's binaries.
fn invocation(words: &[String]) -> Option<(Binary, Option<String>, Vec<String>)> {
    let mut rest: &[String] = words;
    loop {
        match rest.first().map(String::as_str) {
            Some(w) if w.contains('=') && !w.starts_with('-') => rest = &rest[1..],
            Some("taskset") => rest = rest.get(3..)?,
            Some("sudo" | "exec" | "ci/uml-run.sh") => rest = &rest[1..],
            _ => break,
        }
    }
    let first = rest.first()?;
    let mut example = None;
    let (binary, args) = if first == "cargo" && rest.get(1).map(String::as_str) == Some("run") {
        let split = rest.iter().position(|w| w == "--");
        let package = rest
            .windows(2)
            .find(|w| w[0] == "-p" || w[0] == "--package")
            .map(|w| w[1].as_str())?;
        example = rest
            .windows(2)
            .find(|w| w[0] == "--example")
            .map(|w| w[1].clone());
        let binary = match package {
            _ if example.is_some() => Binary::Example,
            "rserpool-registrar" => Binary::Registrar,
            "rserpool-bench" => Binary::Bench,
            "rserpool-endpoint" => Binary::Cli,
            _ => return None,
        };
        (
            binary,
            split.map_or(&rest[rest.len()..], |i| &rest[i + 1..]),
        )
    } else {
        let name = Path::new(first).file_name()?.to_str()?;
        let binary = match name {
            "rserpool-registrar" => Binary::Registrar,
            "rserpool-bench" => Binary::Bench,
            "rserpool" => Binary::Cli,
            _ => return None,
        };
        (binary, &rest[1..])
    };
    let mut args: Vec<String> = args
        .iter()
        .take_while(|w| !matches!(w.as_str(), "|" | "&&" | ";" | ">" | ">>" | "2>" | "<"))
        .cloned()
        .collect();
    if args.last().is_some_and(|w| w == "&") {
        args.pop();
    }
    Some((binary, example, args))
}

/// Whether an argument is a placeholder the reader fills in.
fn placeholder(arg: &str) -> bool {
    arg.contains('<') || arg.contains('[') || arg == "N" || arg == "..." || arg.contains('|')
}

/// Files the docs name that exist only on an installed system, and where the repository has them.
fn installed_path(arg: &str) -> String {
    match arg {
        "/etc/rserpool/registrar.toml" => root()
            .join("deploy/debian/registrar.toml")
            .display()
            .to_string(),
        _ => arg.to_owned(),
    }
}

#[test]
fn every_shell_example_of_the_docs_runs_as_written() {
    let registrar = common::registrar_bin();
    let cli = common::rserpool_bin();
    let bench = PathBuf::from(env!("CARGO_BIN_EXE_rserpool-bench"));
    // The endpoint's examples, which `cargo test --workspace` builds next to the binaries.
    let examples = bench.parent().expect("a target directory").join("examples");
    let mut checked = [0usize; 4];
    let mut skipped = Vec::new();
    let mut failures = Vec::new();
    for doc in documents() {
        let text = std::fs::read_to_string(&doc).unwrap();
        let name = doc
            .strip_prefix(root())
            .unwrap_or(&doc)
            .display()
            .to_string();
        for line in commands(&text) {
            let Some(words) = words(&line) else {
                if line.contains("rserpool") {
                    skipped.push(format!("{name}: {line} (a shell expansion)"));
                }
                continue;
            };
            let Some((binary, example, args)) = invocation(&words) else {
                continue;
            };
            if args.iter().any(|a| placeholder(a)) {
                skipped.push(format!("{name}: {line} (a placeholder)"));
                continue;
            }
            let mut args: Vec<String> = args.iter().map(|a| installed_path(a)).collect();
            let example_path;
            let program = match binary {
                Binary::Registrar => {
                    let checks = [
                        "--check-config",
                        "--check-host",
                        "--version",
                        "--help",
                        "--man-page",
                        "--completions",
                    ];
                    if !args.iter().any(|a| checks.contains(&a.as_str())) {
                        args.push("--check-config".to_owned());
                    }
                    &registrar
                }
                Binary::Bench => {
                    args.push("--help".to_owned());
                    &bench
                }
                Binary::Cli => {
                    args.push("--help".to_owned());
                    &cli
                }
                Binary::Example => {
                    example_path = examples.join(example.as_deref().unwrap_or_default());
                    assert!(
                        example_path.is_file(),
                        "{} is missing: run `cargo build -p rserpool-endpoint --examples` before this test \
                         (.ci/run does)",
                        example_path.display()
                    );
                    args.push("--help".to_owned());
                    &example_path
                }
            };
            let out = Command::new(program)
                .args(&args)
                .env_remove("RSERPOOL_REGISTRAR")
                .output()
                .unwrap();
            // --check-host exits 1 on a host that lacks what the profile needs; it ran.
            let ran = out.status.success()
                || (args.iter().any(|a| a == "--check-host") && out.status.code() == Some(1));
            if ran {
                checked[binary as usize] += 1;
            } else {
                failures.push(format!(
                    "{name}: `{line}` failed ({}): {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
        }
    }
    for s in &skipped {
        eprintln!("skipped {s}");
    }
    eprintln!(
        "checked {} registrar, {} bench, {} rserpool and {} endpoint example commands",
        checked[0], checked[1], checked[2], checked[3]
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // What the docs held when this test was written: fewer means the extraction broke.
    assert!(checked[0] >= 5, "{checked:?}");
    assert!(checked[1] >= 40, "{checked:?}");
    assert!(checked[2] >= 10, "{checked:?}");
    assert!(checked[3] >= 3, "{checked:?}");
}

#[test]
fn the_extraction_finds_commands_joins_continuations_and_drops_output() {
    let doc = "text\n```sh\ncargo build\nrserpool-bench resolve \\\n    -c 16 # a comment\n```\n\
               ```console\n$ rserpool resolve --pool P\nPE ID ...\n```\n```toml\nx = 1\n```\n";
    let lines = commands(doc);
    assert_eq!(
        lines,
        [
            "cargo build",
            "rserpool-bench resolve      -c 16 # a comment",
            "rserpool resolve --pool P"
        ]
    );
    let w = words(&lines[1]).unwrap();
    assert_eq!(w, ["rserpool-bench", "resolve", "-c", "16"]);
    assert_eq!(
        invocation(&w),
        Some((
            Binary::Bench,
            None,
            vec!["resolve".into(), "-c".into(), "16".into()]
        ))
    );
    let w = words("taskset -c 0 target/release/rserpool-registrar --workers 1 &").unwrap();
    assert_eq!(
        invocation(&w),
        Some((
            Binary::Registrar,
            None,
            vec!["--workers".into(), "1".into()]
        ))
    );
    let w = words("X=1 cargo run --release -p rserpool-registrar -- --profile 'default'").unwrap();
    assert_eq!(
        invocation(&w),
        Some((
            Binary::Registrar,
            None,
            vec!["--profile".into(), "default".into()]
        ))
    );
    let w = words("cargo run -p rserpool-endpoint --example counter_pu -- --count 5").unwrap();
    assert_eq!(
        invocation(&w),
        Some((
            Binary::Example,
            Some("counter_pu".into()),
            vec!["--count".into(), "5".into()]
        ))
    );
    assert_eq!(words("rserpool-bench --pid \"$(pidof x)\""), None);
    let looped =
        commands("```sh\nfor p in rr lu; do\n  rserpool-bench resolve --policy $p\ndone\n```\n");
    assert_eq!(
        looped,
        [
            "  rserpool-bench resolve --policy rr",
            "  rserpool-bench resolve --policy lu"
        ]
    );
    assert!(placeholder("<echo|resolve>") && placeholder("rr|wrand") && !placeholder("10s"));
}
