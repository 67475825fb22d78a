//! The `latchkey` binary: parse the command line, read settings, run.

use std::process::ExitCode;

use clap::Parser;
use latchkey::cli::{self, Cli};
use latchkey::config::Settings;
use latchkey::telemetry;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::from_env() {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    telemetry::init(settings.log_format, std::io::stdout);
    match cli::run(cli, settings).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
