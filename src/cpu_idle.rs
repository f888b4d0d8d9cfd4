//! Keeping idle CPUs out of their sleep states while a bench measures.
//!
//! A round trip over loopback wakes the process at the other end. When that process's CPU was idle,
//! the wake-up costs what the CPU's idle state costs to leave: on a VM whose idle CPUs halt (this
//! project's reference machine, 2 vCPU), 60–100 µs instead of ~15 µs — more than the Lua token
//! bucket's whole evaluation, and which cost a client sees flips with where the scheduler puts it.
//! Latency tools hold the kernel's PM QoS request `/dev/cpu_dma_latency` at 0 µs while they measure
//! (cyclictest does by default; tuned's latency-performance profile does the same): the cpuidle
//! governor then polls instead of halting, for every process on the machine, and the request ends
//! when the file is closed. The benches do that unless `CAPBENCH_CPU_IDLE=os`, `load` only with
//! `--cpu-idle poll`, and every run record states the value in force
//! (`environment.cpu_dma_latency_us`).

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};

use anyhow::{Context, Result};

/// The kernel's CPU latency QoS device.
pub const DEVICE: &str = "/dev/cpu_dma_latency";

/// What a run does with idle CPUs (`CAPBENCH_CPU_IDLE`, `--cpu-idle`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum CpuIdle {
    /// Hold a 0 µs CPU latency request while measuring: idle CPUs poll (needs write access to
    /// /dev/cpu_dma_latency, i.e. root).
    #[default]
    Poll,
    /// Leave the machine's idle states alone: latencies include idle CPUs' wake-ups.
    Os,
}

/// A 0 µs CPU latency request, in force until dropped.
#[derive(Debug)]
pub struct Hold {
    _device: File,
}

impl Hold {
    /// Requests 0 µs CPU wake-up latency from the kernel.
    pub fn acquire() -> Result<Self> {
        let mut device = OpenOptions::new()
            .write(true)
            .open(DEVICE)
            .with_context(|| format!("cannot open {DEVICE} for writing"))?;
        device
            .write_all(&0i32.to_ne_bytes())
            .with_context(|| format!("cannot write to {DEVICE}"))?;
        Ok(Self { _device: device })
    }
}

/// The CPU latency limit in force (µs), as the kernel reports it; `None` when it cannot be read
/// (the device is root-only on most systems).
pub fn current_limit_us() -> Option<i32> {
    let mut bytes = [0u8; 4];
    File::open(DEVICE).ok()?.read_exact(&mut bytes).ok()?;
    Some(i32::from_ne_bytes(bytes))
}

/// What a bench (or `load --cpu-idle poll`) holds for its run, per `mode`: with `Poll` and no
/// access to the device, one line on stderr says what the figures will include, and the run goes on.
pub fn for_run(mode: CpuIdle) -> Option<Hold> {
    match mode {
        CpuIdle::Os => None,
        CpuIdle::Poll => match Hold::acquire() {
            Ok(hold) => Some(hold),
            Err(e) => {
                eprintln!(
                    "note: {} — latencies will include idle CPUs' wake-ups; run as root to hold \
                     CPUs awake, or set CAPBENCH_CPU_IDLE=os to silence this",
                    crate::one_line(&e)
                );
                None
            }
        },
    }
}
