//! `cargo run --release --bin load` — capacity under concurrency (see `capbench::load`).

fn main() -> std::process::ExitCode {
    capbench::load::main()
}
