//! `cargo bench hnsw_insert` — what keeping the HNSW index costs a write: single-row INSERT,
//! multi-row INSERT and COPY into the indexed write table and into one without the HNSW index, at
//! several writers, and the DELETE + VACUUM that restores it (capbench::bench::hnsw_insert).

fn main() -> std::process::ExitCode {
    capbench::bench::hnsw_insert::main()
}
