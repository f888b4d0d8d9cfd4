//! `cargo bench http_search` — search end to end over HTTP, and a 429's cost (capbench::bench::http_search).

fn main() -> std::process::ExitCode {
    capbench::bench::http_search::main()
}
