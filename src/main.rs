//! The `sipdns` binary: parse the command line, set up logging, run. Everything else lives
//! in the library.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "sipdns", version, about = "SIP-aware DNS forwarding proxy")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Run {
        /// Config file.
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Validate the config file and every zone, then exit (non-zero on any error).
    Check {
        /// Config file.
        #[arg(short, long)]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    sipdns::memory::limit_arenas();
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Check { config } => match sipdns::state::check(&config) {
            Ok(summary) => {
                eprintln!("{summary}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Run { config } => {
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(sipdns::app::run_from_file(&config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("sipdns: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
