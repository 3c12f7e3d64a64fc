//! `rserpool-sim`: runs seeds of the ENRP scope simulation. `--seed N` runs one, `--seeds A..B`
//! a range; `--verbose` prints each seed's parameter block and the event trace (tracing at debug
//! level). A failing seed prints what broke, its parameter block and the one line that replays
//! it, and the exit status is 1.

use std::process::ExitCode;

use rserpool_sim::Scenario;
use tracing_subscriber::EnvFilter;

fn usage() -> ExitCode {
    eprintln!("usage: rserpool-sim [--seed N | --seeds A..B] [--verbose]");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let mut seeds = 0..1;
    let mut verbose = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seed" => match args.next().and_then(|s| s.parse::<u64>().ok()) {
                Some(s) => seeds = s..s + 1,
                None => return usage(),
            },
            "--seeds" => {
                let range = args.next().and_then(|r| {
                    let (a, b) = r.split_once("..")?;
                    Some(a.parse::<u64>().ok()?..b.parse::<u64>().ok()?)
                });
                match range {
                    Some(r) => seeds = r,
                    None => return usage(),
                }
            }
            "--verbose" => verbose = true,
            _ => return usage(),
        }
    }
    if verbose {
        tracing_subscriber::fmt()
            .with_env_filter(
                EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("debug")),
            )
            .without_time()
            .with_ansi(false)
            .init();
    }
    let mut failed = 0;
    let count = seeds.end.saturating_sub(seeds.start);
    for seed in seeds {
        if verbose {
            println!("{}", Scenario::draw(seed));
        }
        match rserpool_sim::run_seed(seed) {
            Ok(summary) if count == 1 => println!("seed {seed}: ok {summary:?}"),
            Ok(_) => {}
            Err(failure) => {
                failed += 1;
                eprintln!("{failure}");
                if !verbose {
                    eprintln!("{}", Scenario::draw(seed));
                }
                println!("{}", failure.replay_command());
            }
        }
    }
    if count > 1 {
        println!("{} of {count} seeds passed", count - failed);
    }
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
