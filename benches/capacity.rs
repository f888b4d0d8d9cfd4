//! `cargo bench capacity` — concurrency sweeps of the service and of the raw search SQL, with their
//! knees against the seeds' p99 < 50 ms (capbench::bench::capacity).

fn main() -> std::process::ExitCode {
    capbench::bench::capacity::main()
}
