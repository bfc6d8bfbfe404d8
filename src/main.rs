//! The `sipdns` binary: parse the command line, set up logging, run. Everything else lives
//! in the library.

use std::{io::IsTerminal as _, path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use sipdns::config::LogFormat;

#[derive(Parser)]
#[command(name = "sipdns", version, about = "SIP-aware DNS forwarding proxy")]
struct Cli {
    /// Log lines as `text` or `json` (default: the config's `log.format`, else text).
    #[arg(long, global = true, value_parser = ["text", "json"])]
    log_format: Option<String>,
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
    /// Print phone provisioning settings that pair with sipdns for one SIP domain (offline:
    /// reads the config and zones, like `check`).
    Phones {
        #[command(subcommand)]
        phone: PhoneCommand,
    },
    #[command(flatten)]
    Client(sipdns::cli::ClientCommand),
}

#[derive(Subcommand)]
enum PhoneCommand {
    /// Yealink: server settings and the static DNS cache for one account.
    Yealink {
        /// The SIP domain (one of sip.domains).
        #[arg(long)]
        domain: String,
        /// The account number X of `account.X.*`.
        #[arg(long, default_value_t = 1)]
        account: u32,
        /// Config file.
        #[arg(short, long)]
        config: PathBuf,
    },
    /// linphone: a linphonerc snippet.
    Linphone {
        /// The SIP domain (one of sip.domains).
        #[arg(long)]
        domain: String,
        /// Config file.
        #[arg(short, long)]
        config: PathBuf,
    },
}

/// Sets up logging to stderr: colours only on a terminal, never in the journal or a file.
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        // The module path would clash with the `target` field of target events.
        LogFormat::Json => builder
            .with_target(false)
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init(),
    }
}

fn main() -> ExitCode {
    sipdns::memory::limit_arenas();
    let cli = Cli::parse();
    let format = match (cli.log_format.as_deref(), &cli.command) {
        (Some("json"), _) => LogFormat::Json,
        (Some(_), _) => LogFormat::Text,
        // Read ahead for `log.format` only; errors are reported by the real load below.
        (None, Command::Run { config } | Command::Check { config }) => {
            sipdns::config::Config::load(config).map_or(LogFormat::Text, |c| c.log.format)
        }
        (None, Command::Client(_) | Command::Phones { .. }) => LogFormat::Text,
    };
    init_logging(format);
    match cli.command {
        Command::Client(cmd) => sipdns::cli::run(cmd),
        Command::Check { config } => match sipdns::app::check(&config) {
            Ok(summary) => {
                eprintln!("{summary}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Phones { phone } => {
            let (config, domain, phone) = match phone {
                PhoneCommand::Yealink {
                    domain,
                    account,
                    config,
                } => (config, domain, sipdns::phones::Phone::Yealink { account }),
                PhoneCommand::Linphone { domain, config } => {
                    (config, domain, sipdns::phones::Phone::Linphone)
                }
            };
            match sipdns::phones::from_file(&config, &domain, phone) {
                Ok(text) => {
                    use std::io::Write as _;
                    match std::io::stdout().lock().write_all(text.as_bytes()) {
                        Ok(()) => ExitCode::SUCCESS,
                        Err(e) => {
                            eprintln!("sipdns phones: cannot write: {e}");
                            ExitCode::FAILURE
                        }
                    }
                }
                Err(e) => {
                    eprintln!("sipdns phones: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
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
