//! `rserpool-bench`: the load generator's entry point; prints the report on stdout.

use std::process::ExitCode;

use rserpool_bench::{Cli, app};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse_noting_given(std::env::args_os()).unwrap_or_else(|e| e.exit());
    match app::run(&cli) {
        Ok(report) => {
            println!("{}", report.render(cli.json).trim_end());
            if report.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("rserpool-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
