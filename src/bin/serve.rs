//! `cargo run --release --bin serve` — the reference search service (see `capbench::server`).

use std::process::ExitCode;

use capbench::config::Config;

fn main() -> ExitCode {
    match capbench::parse_args::<Config>() {
        Ok(config) => capbench::main_handling_signals(capbench::server::run(config)),
        Err(code) => code,
    }
}
