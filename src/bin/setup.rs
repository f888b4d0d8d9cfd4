//! `cargo run --release --bin setup` — load the dataset (see `capbench::setup`).

use std::process::ExitCode;

use capbench::setup::{SetupArgs, run};

fn main() -> ExitCode {
    capbench::logging::init(capbench::logging::LogFormat::Text);
    match capbench::parse_args::<SetupArgs>() {
        Ok(args) => capbench::main_with(run(args)),
        Err(code) => code,
    }
}
