//! The real `setup` binary: bad input gets one clear line and a non-zero exit code; a good run
//! loads, and the same run again does nothing.

use crate::common;

use std::process::{Command, Output};

fn setup(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_setup"));
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run the setup binary")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// One `error: …` line (other lines may only be setup's own progress notes).
fn assert_one_error_line(out: &Output, code: i32, needle: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(code), "exit code; stderr: {err}");
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(
        errors.len(),
        1,
        "exactly one error line expected, got: {err}"
    );
    assert!(
        errors[0].contains(needle),
        "'{needle}' not in: {}",
        errors[0]
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn nonsense_parameters_are_refused_with_one_line() {
    assert_one_error_line(&setup(&["--rows", "0"], &[]), 2, "rows must be at least 1");
    assert_one_error_line(&setup(&["--dims", "2001"], &[]), 2, "more than the 2000");
    assert_one_error_line(&setup(&["--sigma", "-0.1"], &[]), 2, "sigma must be");
    assert_one_error_line(
        &setup(&[], &[("CAPBENCH_ROWS", "zero")]),
        2,
        "not a whole number",
    );
    assert_one_error_line(
        &setup(&["--m", "16", "--ef-construction", "20"], &[]),
        1,
        "2 × m",
    );
}

#[test]
fn an_unreachable_database_is_named_without_its_password() {
    let out = setup(
        &[],
        &[(
            "DATABASE_URL",
            "postgres://bench:hunter2@127.0.0.1:1/capbench",
        )],
    );
    assert_one_error_line(
        &out,
        1,
        "cannot connect to PostgreSQL at postgres://bench:***@127.0.0.1:1/capbench",
    );
    assert!(
        !stderr(&out).contains("hunter2"),
        "the password leaked: {}",
        stderr(&out)
    );
}

#[test]
fn an_unreachable_redis_is_reported() {
    let out = setup(
        &["--print-env"],
        &[
            ("DATABASE_URL", "postgres://x@127.0.0.1:1/x"),
            ("REDIS_URL", "redis://127.0.0.1:1"),
        ],
    );
    assert_one_error_line(&out, 1, "cannot connect to Redis at redis://127.0.0.1:1");
}

#[tokio::test(flavor = "multi_thread")]
async fn setup_loads_then_does_nothing_the_second_time() {
    let cfg = common::config(
        common::small_params(400, 32),
        capbench::config::IndexParams::default(),
    );
    let (_, url) = common::fresh_database("cli", cfg).await;
    let args = [
        "--rows",
        "400",
        "--dims",
        "32",
        "--m",
        "8",
        "--ef-construction",
        "32",
    ];
    let env = [("DATABASE_URL", url.as_str())];

    let first = setup(&args, &env);
    let out = String::from_utf8_lossy(&first.stdout);
    assert!(first.status.success(), "stderr: {}", stderr(&first));
    assert!(
        out.contains("400 rows") && out.contains("binary COPY") && out.contains("HNSW built"),
        "{out}"
    );
    assert!(
        out.contains("pgvector 0."),
        "the summary names the versions: {out}"
    );

    let second = setup(&args, &env);
    let out = String::from_utf8_lossy(&second.stdout);
    assert!(second.status.success(), "stderr: {}", stderr(&second));
    assert!(out.contains("already loaded, nothing to do"), "{out}");
}
