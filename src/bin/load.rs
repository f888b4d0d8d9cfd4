//! `cargo run --release --bin load` — capacity under concurrency (see `capbench::load`).

fn main() -> std::process::ExitCode {
    capbench::logging::init(capbench::logging::LogFormat::Text);
    capbench::load::main(capbench::report::publish)
}
