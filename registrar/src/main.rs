//! `rserpool-registrar`: the Pool Registrar daemon. Parses the command line, loads the layered
//! configuration (profile, file, flags), sets up logging and runs the daemon until SIGTERM or
//! SIGINT.

use std::process::ExitCode;

use clap::Parser;
use rserpool_registrar::cli::{self, Cli};
use rserpool_registrar::config::{Config, LogFormat};
use rserpool_registrar::daemon;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, reload};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(text) = cli::generated(&cli) {
        return match std::io::Write::write_all(&mut std::io::stdout(), &text) {
            Ok(()) => ExitCode::SUCCESS,
            Err(_) => ExitCode::FAILURE,
        };
    }
    if cli.check_config {
        return match cli::check_config(&cli) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("rserpool-registrar: {e}");
                ExitCode::from(2)
            }
        };
    }
    if cli.check_host {
        return match cli::check_host(&cli) {
            Ok((text, failed)) => {
                print!("{text}");
                if failed {
                    ExitCode::FAILURE
                } else {
                    ExitCode::SUCCESS
                }
            }
            Err(e) => {
                eprintln!("rserpool-registrar: {e}");
                ExitCode::from(2)
            }
        };
    }
    let layers = cli.layers();
    let config = match Config::load(&layers) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("rserpool-registrar: {e}");
            return ExitCode::from(2);
        }
    };
    let filter = EnvFilter::try_new(&config.log.level).unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    // Colour only on a terminal: a file or a journal gets plain text.
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let format = config.log.format;
    let registry = tracing_subscriber::registry().with(filter);
    match config.log.format {
        LogFormat::Json => registry.with(fmt.json()).init(),
        LogFormat::Text => registry.with(fmt).init(),
    }
    let result = daemon::run(
        config,
        Box::new(move || Config::load(&layers).map_err(|e| e.to_string())),
        Box::new(move |level| {
            let filter = EnvFilter::try_new(level).map_err(|e| e.to_string())?;
            handle.reload(filter).map_err(|e| e.to_string())
        }),
    );
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line per error: JSON logs get it as a log record, text logs as plain text.
            match format {
                LogFormat::Json => tracing::error!("{e}"),
                LogFormat::Text => eprintln!("rserpool-registrar: {e}"),
            }
            ExitCode::FAILURE
        }
    }
}
