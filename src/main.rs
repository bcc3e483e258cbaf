use std::process::ExitCode;

use clap::Parser;
use usage_worker::app;
use usage_worker::cli::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match app::run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("usage-worker: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}
