//! `cargo bench scale` (opt-in) — build time, index size, latency and recall of each index variant
//! at several dataset sizes, their fitted growth and the capacity plan (capbench::bench::scale).

fn main() -> std::process::ExitCode {
    capbench::bench::scale::main()
}
