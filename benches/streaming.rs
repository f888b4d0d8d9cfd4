//! `cargo bench streaming` — search latency and recall@k while rows are inserted at a fixed rate
//! in stages, then deleted and re-embedded, before, during and after VACUUM; the write table
//! restored at the end (capbench::bench::streaming).

fn main() -> std::process::ExitCode {
    capbench::bench::streaming::main()
}
