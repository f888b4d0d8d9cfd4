//! `cargo bench hnsw` — raw HNSW latency, recall and percentiles per ef_search (capbench::bench::hnsw).

fn main() -> std::process::ExitCode {
    capbench::bench::hnsw::main()
}
