//! `rserpool-bench`: the load generator's entry point; prints the report on stdout.

use std::process::ExitCode;

use clap::Parser;
use rserpool_bench::{Cli, app};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match app::run(&cli) {
        Ok(report) => {
            println!("{}", report.render(cli.json).trim_end());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("rserpool-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
