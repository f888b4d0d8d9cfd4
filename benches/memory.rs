//! `cargo bench memory` — the same HNSW search warm, cold (restarted, page cache dropped) and with
//! shared_buffers below the index's size, with buffer hits and reads per query
//! (capbench::bench::memory).

fn main() -> std::process::ExitCode {
    capbench::bench::memory::main()
}
