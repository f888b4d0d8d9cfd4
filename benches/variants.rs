//! `cargo bench variants` — the index variants (HNSW on vector and halfvec, binary quantization with
//! re-rank, IVFFlat) side by side: latency, QPS and recall per knob value, build time and size
//! (capbench::bench::variants).

fn main() -> std::process::ExitCode {
    capbench::bench::variants::main()
}
