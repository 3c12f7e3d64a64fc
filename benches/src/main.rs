//! `rserpool-bench`: the load generator's entry point; prints the report on stdout (text, JSON or
//! CSV) and writes the HDR interval log of `--hdr-log`; a `sweep` prints its own report.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::process::ExitCode;

use rserpool_bench::{Cli, RunReport, ScenarioKind, app, sweep};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse_noting_given(std::env::args_os()).unwrap_or_else(|e| e.exit());
    if cli.scenario == ScenarioKind::Sweep {
        return match sweep::run(&cli, &sweep::command_line(std::env::args_os())) {
            Ok(report) => {
                println!("{}", report.render(cli.json).trim_end());
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e.to_string()),
        };
    }
    // Opened before the run, so that a path that cannot be written fails at once.
    let hdr_log = match cli.hdr_log.as_deref().map(File::create).transpose() {
        Ok(file) => file,
        Err(e) => return fail(&format!("--hdr-log: {e}")),
    };
    let report = match app::run(&cli) {
        Ok(report) => report,
        Err(e) => {
            if let Some(path) = &cli.hdr_log {
                let _ = fs::remove_file(path);
            }
            return fail(&e.to_string());
        }
    };
    let text = if cli.csv {
        report.csv()
    } else {
        report.render(cli.json)
    };
    println!("{}", text.trim_end());
    if let (Some(file), Some(path)) = (hdr_log, &cli.hdr_log)
        && let Err(e) = write_hdr_log(&report, file)
    {
        return fail(&format!("--hdr-log {}: {e}", path.display()));
    }
    if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn write_hdr_log(report: &RunReport, file: File) -> std::io::Result<()> {
    let mut out = BufWriter::new(file);
    report.write_hdr_log(&mut out)?;
    out.flush()
}

fn fail(why: &str) -> ExitCode {
    eprintln!("rserpool-bench: {why}");
    ExitCode::FAILURE
}
