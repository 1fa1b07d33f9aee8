//! The `hotclone` binary: parse the command line, set up logging, run the
//! command, and turn errors into a message and an exit code.

mod cli;

use std::process::ExitCode;

use clap::Parser;
use cli::{Cli, Command};
use tracing_subscriber::EnvFilter;

fn init_logging(cli: &Cli) {
    let default = match (cli.quiet, cli.verbose) {
        (true, _) => "warn",
        (false, 0) => "info",
        (false, 1) => "hotclone=debug,info",
        (false, _) => "hotclone=trace,debug",
    };
    let filter =
        EnvFilter::try_from_env("HOTCLONE_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .without_time()
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result: anyhow::Result<u8> = runtime.block_on(async {
        match cli.command {
            Command::Probe(args) => cli::probe::run(args).await.map(|()| 0),
            Command::Plan(args) => cli::plan::run(args).await.map(|()| 0),
            Command::Agent(args) => cli::agent::run(args).await.map(|()| 0),
            Command::Clone(args) => cli::clone::run(args).await,
            Command::Sync(args) => cli::sync::run(args).await,
            Command::Status(args) => cli::status::run(args),
            Command::Rehearse(args) => cli::rehearse::run(args).await,
            Command::Cutover(args) => cli::cutover::run(args).await,
            Command::Verify(args) => cli::verify::run(args).await,
            Command::Rescue(args) => cli::rescue::run(args).map(|()| 0),
            Command::Launch(args) => cli::launch::run(args).await.map(|()| 0),
            Command::Export(args) => cli::export::run(args).map(|()| 0),
            Command::Target(args) => cli::target::run(args).map(|()| 0),
        }
    });
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
