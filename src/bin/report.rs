//! `cargo run --release --bin report [-- --compare A,B] [--fail-on-regression]`: rebuilds
//! target-reports/index.html from the run records and compares saved baselines or runs.

use std::process::ExitCode;

fn main() -> ExitCode {
    capbench::logging::init(capbench::logging::LogFormat::Text);
    let args = match capbench::parse_args::<capbench::report::ReportArgs>() {
        Ok(args) => args,
        Err(code) => return code,
    };
    match capbench::report::run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", capbench::one_line(&e));
            ExitCode::FAILURE
        }
    }
}
