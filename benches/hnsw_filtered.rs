//! `cargo bench hnsw_filtered` — filtered HNSW search per tag, ef_search and iterative-scan mode, with
//! recall, the share of short answers and the plan (capbench::bench::hnsw_filtered).

fn main() -> std::process::ExitCode {
    capbench::bench::hnsw_filtered::main()
}
