//! Load shapes in k6's `stages` spirit: `--stages 30s:20,2m:20,10s:200,1m:200,30s:20` — each stage
//! moves the target linearly from the previous stage's (0 before the first) to its own over its
//! duration: a ramp, a hold (the same target again), a spike (a short ramp up), a ramp down. The
//! target is users in the closed model (k6's ramping-vus: users started as it rises, retired at the
//! end of their task as it falls) and arrivals per second with `--rate` (k6's
//! ramping-arrival-rate: request *k* is due when the integral of the rate reaches *k*).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// One stage: over `duration`, the target moves to `target`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stage {
    pub duration: Duration,
    pub target: f64,
}

/// The stages of a run, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Stages(pub Vec<Stage>);

/// The most stages a shape may have.
pub const MAX_STAGES: usize = 100;

impl FromStr for Stages {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let usage = || {
            format!(
                "stages '{s}' are not DURATION:TARGET,… e.g. '30s:20,2m:20,10s:200,1m:200,30s:20'"
            )
        };
        let mut stages = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (d, t) = part.rsplit_once(':').ok_or_else(usage)?;
            let duration =
                super::args::parse_duration(d).map_err(|e| format!("stage '{part}': {e}"))?;
            if duration.is_zero() {
                return Err(format!("stage '{part}': a stage lasts more than 0 s"));
            }
            let target: f64 =
                t.trim().trim_end_matches("/s").parse().map_err(|_| {
                    format!("stage '{part}': '{t}' is not a number of users or a rate")
                })?;
            if !(target.is_finite() && (0.0..=100_000.0).contains(&target)) {
                return Err(format!("stage '{part}': the target is 0 to 100,000"));
            }
            stages.push(Stage { duration, target });
        }
        if stages.is_empty() {
            return Err(usage());
        }
        if stages.len() > MAX_STAGES {
            return Err(format!("{} stages: at most {MAX_STAGES}", stages.len()));
        }
        if stages.iter().all(|st| st.target == 0.0) {
            return Err(format!(
                "stages '{s}': every target is 0, nothing would run"
            ));
        }
        Ok(Stages(stages))
    }
}

impl fmt::Display for Stages {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|st| format!("{}:{}", humantime::format_duration(st.duration), st.target))
            .collect();
        f.write_str(&parts.join(","))
    }
}

impl Stages {
    /// The whole shape's duration: the run's time.
    pub fn total(&self) -> Duration {
        self.0.iter().map(|st| st.duration).sum()
    }

    /// The highest target (the users a closed run may need at once).
    pub fn peak(&self) -> f64 {
        self.0.iter().map(|st| st.target).fold(0.0, f64::max)
    }

    /// Each stage's (start, end) in seconds from the run's start.
    pub fn bounds(&self) -> Vec<(f64, f64)> {
        let mut at = 0.0;
        self.0
            .iter()
            .map(|st| {
                let start = at;
                at += st.duration.as_secs_f64();
                (start, at)
            })
            .collect()
    }

    /// The stage running at `t` (0-based; the last after the end).
    pub fn stage_at(&self, t: Duration) -> usize {
        let t = t.as_secs_f64();
        self.bounds()
            .iter()
            .position(|&(_, end)| t < end)
            .unwrap_or(self.0.len() - 1)
    }

    /// The target at `t`: linear within each stage from the previous stage's target (0 before the
    /// first); the last target after the end.
    pub fn target_at(&self, t: Duration) -> f64 {
        let t = t.as_secs_f64();
        let mut from = 0.0;
        for (st, (start, end)) in self.0.iter().zip(self.bounds()) {
            if t < end {
                return from + (st.target - from) * ((t - start) / (end - start));
            }
            from = st.target;
        }
        from
    }

    /// When arrival `k` (0-based) is due with the target as an arrival rate: the time at which the
    /// rate's integral reaches `k`; `None` when the shape ends first.
    pub fn arrival(&self, k: u64) -> Option<Duration> {
        let k = k as f64;
        let mut from = 0.0;
        let mut done = 0.0; // arrivals due before the segment
        for (st, (start, end)) in self.0.iter().zip(self.bounds()) {
            let d = end - start;
            let here = (from + st.target) / 2.0 * d;
            if k < done + here {
                // N(x) = done + from·x + a·x², a = (target − from) / 2d; solved for N(x) = k in a
                // form that stays stable when the rate falls (a < 0).
                let m = k - done;
                if m <= 0.0 {
                    return Some(Duration::from_secs_f64(start));
                }
                let a = (st.target - from) / (2.0 * d);
                let disc = (from * from + 4.0 * a * m).max(0.0);
                let denom = from + disc.sqrt();
                if denom <= 0.0 {
                    return None;
                }
                let x = (2.0 * m / denom).min(d);
                return Some(Duration::from_secs_f64(start + x));
            }
            done += here;
            from = st.target;
        }
        None
    }

    /// The arrivals the whole shape schedules.
    pub fn arrivals(&self) -> f64 {
        let mut from = 0.0;
        let mut n = 0.0;
        for st in &self.0 {
            n += (from + st.target) / 2.0 * st.duration.as_secs_f64();
            from = st.target;
        }
        n
    }

    /// `stage 3/5 (10s → 200 users)`, the live view's words for the stage at `t`.
    pub fn describe_at(&self, t: Duration, unit: &str) -> String {
        let i = self.stage_at(t);
        let st = self.0[i];
        format!(
            "stage {}/{} ({} → {} {unit})",
            i + 1,
            self.0.len(),
            humantime::format_duration(st.duration),
            st.target
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn stages_parse_as_k6_writes_them() {
        let s: Stages = "30s:20, 2m:20,10s:200,1m:200,30s:20".parse().unwrap();
        assert_eq!(s.0.len(), 5);
        assert_eq!(s.total(), Duration::from_secs(30 + 120 + 10 + 60 + 30));
        assert_eq!(s.peak(), 200.0);
        assert_eq!(s.to_string(), "30s:20,2m:20,10s:200,1m:200,30s:20");
        assert_eq!("5s:100/s".parse::<Stages>().unwrap().0[0].target, 100.0);
        for bad in [
            "",
            "30s",
            "x:10",
            "0s:10",
            "10s:-1",
            "10s:lots",
            "5s:0,5s:0",
            "1s:1e9",
        ] {
            assert!(bad.parse::<Stages>().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_target_ramps_holds_spikes_and_falls() {
        let s: Stages = "10s:20,10s:20,2s:200,10s:0".parse().unwrap();
        assert_eq!(s.target_at(secs(0.0)), 0.0);
        assert_eq!(s.target_at(secs(5.0)), 10.0);
        assert_eq!(s.target_at(secs(15.0)), 20.0);
        assert_eq!(s.target_at(secs(21.0)), 110.0);
        assert_eq!(s.target_at(secs(27.0)), 100.0);
        assert_eq!(s.target_at(secs(99.0)), 0.0);
        assert_eq!(
            [0.0, 9.99, 10.0, 21.0, 31.0, 99.0].map(|t| s.stage_at(secs(t))),
            [0, 0, 1, 2, 3, 3]
        );
        assert_eq!(
            s.describe_at(secs(21.0), "users"),
            "stage 3/4 (2s → 200 users)"
        );
    }

    #[test]
    fn arrivals_follow_the_rates_integral() {
        // `10s:10` ramps from 0 to 10/s: 50 arrivals, the k-th at √(2k) s.
        let ramp: Stages = "10s:10".parse().unwrap();
        assert_eq!(ramp.arrivals(), 50.0);
        for k in [0u64, 1, 8, 18, 49] {
            let t = ramp.arrival(k).unwrap().as_secs_f64();
            assert!((t - (2.0 * k as f64).sqrt()).abs() < 1e-6, "{k}: {t}");
        }
        assert_eq!(ramp.arrival(50), None);
        // Ramp up to 10/s in 10 s, hold 10 s, ramp down to 0 in 10 s: 50 + 100 + 50 arrivals.
        let s: Stages = "10s:10,10s:10,10s:0".parse().unwrap();
        assert_eq!(s.arrivals(), 200.0);
        let at = |k| s.arrival(k).unwrap().as_secs_f64();
        assert!((at(50) - 10.0).abs() < 1e-9);
        assert!((at(100) - 15.0).abs() < 1e-9);
        // Falling: N(t) = 150 + 10x − x²/2 reaches 192 at x = 10 − √16 = 6 s.
        assert!((at(192) - 26.0).abs() < 1e-9, "{}", at(192));
        assert_eq!(s.arrival(200), None);
        // Due times never go backwards.
        let times: Vec<f64> = (0..200).map(at).collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]));
    }
}
