//! `cargo bench rate_limit` — Lua token-bucket latency and throughput (capbench::bench::rate_limit).

fn main() -> std::process::ExitCode {
    capbench::bench::rate_limit::main()
}
