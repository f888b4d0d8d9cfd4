//! The integration tests, one crate (one link): each module is one area, run against real
//! PostgreSQL+pgvector and Redis — the embedded stack, started by the project's own code when
//! `DATABASE_URL` / `REDIS_URL` are unset. `cargo test --test it report::` runs one area.
//!
//! They share one process: a test changes no process-wide setting (environment variables, the
//! connect timeout) in place — what needs another setting runs a binary with it.

mod common;

mod benches;
mod cli;
mod compose;
mod cpu_idle;
mod dataset;
mod embed;
mod hnsw;
mod load;
mod load_failures;
mod ratelimit;
mod report;
mod scenarios;
mod secrets;
mod serve_hardening;
mod service;
mod setup;
mod stack;
mod variants;
mod writes;
