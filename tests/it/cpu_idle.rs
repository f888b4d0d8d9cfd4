//! Holding idle CPUs awake while benches measure: the kernel's CPU latency request is 0 µs exactly
//! while a hold lives, the run record states it, and a bad setting is refused.

use capbench::config::Config;
use capbench::cpu_idle::{self, CpuIdle, Hold};
use capbench::record::Environment;
use clap::{CommandFactory, FromArgMatches};

/// `args` parsed as the binaries parse them, but with every environment fallback removed: the
/// defaults under test are the same whatever the caller exported (README suggests exporting
/// `CAPBENCH_CPU_IDLE=os`, for one).
fn parse_ignoring_environment(args: &[&str]) -> Result<Config, clap::Error> {
    let mut command = Config::command();
    let ids: Vec<clap::Id> = command
        .get_arguments()
        .map(|a| a.get_id().clone())
        .collect();
    for id in ids {
        command = command.mut_arg(id, |a| a.env(None::<&'static str>));
    }
    Config::from_arg_matches(&command.try_get_matches_from(args)?)
}

fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

#[test]
fn a_hold_sets_the_kernels_cpu_latency_to_zero_until_dropped() {
    if !is_root() {
        // Without write access the hold is refused, naming the device (benches then go on and say so).
        let e = Hold::acquire().expect_err("a normal user cannot write the device");
        assert!(format!("{e:#}").contains(cpu_idle::DEVICE), "{e:#}");
        return;
    }
    // Normally the kernel's default (2000000000 µs); 0 if a bench or cyclictest holds it right now,
    // and then the checks after each drop still hold (the value stays 0).
    let before = cpu_idle::current_limit_us().expect("root reads the device");
    let hold = Hold::acquire().expect("root can write the device");
    assert_eq!(cpu_idle::current_limit_us(), Some(0));
    assert_eq!(Environment::of_machine().cpu_dma_latency_us, Some(0));
    let second = Hold::acquire().expect("requests stack");
    drop(hold);
    assert_eq!(
        cpu_idle::current_limit_us(),
        Some(0),
        "one request still stands"
    );
    drop(second);
    assert_eq!(cpu_idle::current_limit_us(), Some(before));
    assert_eq!(Environment::of_machine().cpu_dma_latency_us, Some(before));
}

#[test]
fn the_bench_setting_defaults_to_poll_and_refuses_nonsense() {
    let parse = |args: &[&str]| parse_ignoring_environment(&[&["capbench"], args].concat());
    // Unset: the benches poll (CpuIdle's default), `load` leaves the OS alone.
    assert_eq!(parse(&[]).unwrap().bench.cpu_idle, None);
    assert_eq!(CpuIdle::default(), CpuIdle::Poll);
    let os = parse(&["--cpu-idle", "os"])
        .unwrap()
        .bench
        .cpu_idle
        .unwrap();
    assert_eq!(os, CpuIdle::Os);
    assert_eq!(
        parse(&["--cpu-idle", "poll"]).unwrap().bench.cpu_idle,
        Some(CpuIdle::Poll)
    );
    assert!(cpu_idle::for_run(os).is_none(), "os mode holds nothing");
    let e = parse(&["--cpu-idle", "sleepy"]).expect_err("not a mode");
    let line = capbench::config::first_line(&e.to_string());
    assert!(line.contains("sleepy") && line.contains("poll"), "{line}");
}
