//! What a load run measured: per request name and in total, every latency in HDR histograms (from the
//! intended start — corrected — and from the actual send — uncorrected), status codes, failures, and
//! a per-second history. Written as Locust's CSV files (`locust`) and as the run record (`record`).

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant, SystemTime};

use hdrhistogram::Histogram;

use super::failure::Failure;
use super::recall::RecallSummary;
use crate::record::{self, Stat};

/// Locust's percentile columns, in its order and with its headers.
pub const PERCENTILES: [(Stat, &str); 11] = [
    (Stat::P50, "50%"),
    (Stat::P66, "66%"),
    (Stat::P75, "75%"),
    (Stat::P80, "80%"),
    (Stat::P90, "90%"),
    (Stat::P95, "95%"),
    (Stat::P98, "98%"),
    (Stat::P99, "99%"),
    (Stat::P999, "99.9%"),
    (Stat::P9999, "99.99%"),
    (Stat::Max, "100%"),
];

/// The quantile of one of [`PERCENTILES`] (max is 1).
pub fn quantile(s: Stat) -> f64 {
    s.quantile().unwrap_or(1.0)
}

/// Locust's window for the "current" percentiles of the history (seconds).
const WINDOW_SECONDS: usize = 10;

/// One finished request.
#[derive(Debug, Clone)]
pub struct RequestOutcome {
    /// `POST`, `GET`, or `SQL` for the database target.
    pub method: &'static str,
    pub name: std::sync::Arc<str>,
    /// When the request should have started (open model: its slot in the schedule; closed: `sent`).
    pub intended: Instant,
    pub sent: Instant,
    pub done: Instant,
    /// HTTP status, if an answer came.
    pub status: Option<u16>,
    /// Why it counts as a failure (`None`: a success, which includes expected 429s).
    pub failure: Option<Failure>,
    /// Response body bytes.
    pub bytes: u64,
    /// The query number and recall@k of the answer, when it was scored (`load --recall`;
    /// successes only).
    pub recall: Option<(usize, f64)>,
    /// Rows (vectors) the request added to the table: an INSERT's rows once committed, a scenario
    /// request's `writes` when it succeeded; 0 for reads and failures.
    pub rows: u64,
}

impl RequestOutcome {
    /// A request that could not be sent (no connection): failed now, without an answer.
    pub fn failed(
        method: &'static str,
        name: std::sync::Arc<str>,
        intended: Instant,
        why: Failure,
    ) -> Self {
        let now = Instant::now();
        Self {
            method,
            name,
            intended: intended.min(now),
            sent: now,
            done: now,
            status: None,
            failure: Some(why),
            bytes: 0,
            recall: None,
            rows: 0,
        }
    }
}

/// Statistics of one request name (or of all: "Aggregated").
#[derive(Debug, Clone)]
pub struct Entry {
    pub method: String,
    pub name: String,
    /// Latency from the intended start (ns). In the closed model equal to `uncorrected`.
    pub corrected: Histogram<u64>,
    /// Latency from the actual send (ns).
    pub uncorrected: Histogram<u64>,
    pub requests: u64,
    pub failures: u64,
    pub bytes: u64,
    pub statuses: BTreeMap<u16, u64>,
    /// The recall of the answers scored (`load --recall`).
    pub recall: RecallSummary,
    /// Rows (vectors) its requests added.
    pub rows: u64,
    /// How late its requests were sent after their due time (ns): the open model's hand-off, a
    /// writer behind its `--write-rate`.
    pub lateness: Histogram<u64>,
    /// This second's recall (sum, answers), and the last [`WINDOW_SECONDS`] seconds' (for the
    /// history).
    recall_current: (f64, u64),
    recall_window: VecDeque<(f64, u64)>,
    /// This second's latencies, and the last [`WINDOW_SECONDS`] seconds' (for the history).
    current: Histogram<u64>,
    window: VecDeque<Histogram<u64>>,
    /// Requests and failures at the last tick (for per-second rates).
    at_tick: (u64, u64),
}

impl Entry {
    fn new(method: &str, name: &str) -> Self {
        Self {
            method: method.to_string(),
            name: name.to_string(),
            corrected: record::latency_histogram(),
            uncorrected: record::latency_histogram(),
            requests: 0,
            failures: 0,
            bytes: 0,
            statuses: BTreeMap::new(),
            recall: RecallSummary::default(),
            rows: 0,
            lateness: record::latency_histogram(),
            recall_current: (0.0, 0),
            recall_window: VecDeque::new(),
            current: record::latency_histogram(),
            window: VecDeque::new(),
            at_tick: (0, 0),
        }
    }

    fn add(&mut self, o: &RequestOutcome) {
        let corrected = o.done.saturating_duration_since(o.intended).as_nanos() as u64;
        let uncorrected = o.done.saturating_duration_since(o.sent).as_nanos() as u64;
        self.corrected.saturating_record(corrected.max(1));
        self.uncorrected.saturating_record(uncorrected.max(1));
        self.current.saturating_record(corrected.max(1));
        self.requests += 1;
        self.failures += u64::from(o.failure.is_some());
        self.bytes += o.bytes;
        if let Some(s) = o.status {
            *self.statuses.entry(s).or_default() += 1;
        }
        self.rows += o.rows;
        self.lateness.saturating_record(
            o.sent
                .saturating_duration_since(o.intended)
                .as_nanos()
                .max(1) as u64,
        );
        if let Some((q, r)) = o.recall {
            self.recall.add(q, r);
            self.recall_current.0 += r;
            self.recall_current.1 += 1;
        }
    }

    /// Percentile `q` (0..=1) of the corrected latencies, in ms (0 when empty).
    pub fn ms(&self, q: f64) -> f64 {
        quantile_ms(&self.corrected, q)
    }

    /// Percentile `q` of the uncorrected latencies, in ms.
    pub fn uncorrected_ms(&self, q: f64) -> f64 {
        quantile_ms(&self.uncorrected, q)
    }

    pub fn mean_ms(&self) -> f64 {
        if self.corrected.is_empty() {
            0.0
        } else {
            self.corrected.mean() / 1e6
        }
    }

    pub fn min_ms(&self) -> f64 {
        if self.corrected.is_empty() {
            0.0
        } else {
            self.corrected.min() as f64 / 1e6
        }
    }

    /// Failures / requests (0 when there were none).
    pub fn error_rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.failures as f64 / self.requests as f64
        }
    }

    fn window_histogram(&self) -> Histogram<u64> {
        let mut h = self.current.clone();
        for w in &self.window {
            let _ = h.add(w);
        }
        h
    }

    /// The mean recall of the answers scored over the last [`WINDOW_SECONDS`] seconds (this one
    /// included), if any was.
    fn window_recall(&self) -> Option<f64> {
        let (sum, n) = self
            .recall_window
            .iter()
            .chain(std::iter::once(&self.recall_current))
            .fold((0.0, 0), |(s, n), (s2, n2)| (s + s2, n + n2));
        (n > 0).then(|| sum / n as f64)
    }

    /// Closes this second: returns (requests, failures) since the last tick.
    fn tick(&mut self) -> (u64, u64) {
        let done = (
            self.requests - self.at_tick.0,
            self.failures - self.at_tick.1,
        );
        self.at_tick = (self.requests, self.failures);
        let closed = std::mem::replace(&mut self.current, record::latency_histogram());
        self.window.push_back(closed);
        while self.window.len() >= WINDOW_SECONDS {
            self.window.pop_front();
        }
        self.recall_window
            .push_back(std::mem::take(&mut self.recall_current));
        while self.recall_window.len() >= WINDOW_SECONDS {
            self.recall_window.pop_front();
        }
        done
    }
}

fn quantile_ms(h: &Histogram<u64>, q: f64) -> f64 {
    if h.is_empty() {
        0.0
    } else if q >= 1.0 {
        h.max() as f64 / 1e6
    } else {
        h.value_at_quantile(q) as f64 / 1e6
    }
}

/// What failures are counted by: (method, name, why).
pub type FailureKey = (&'static str, std::sync::Arc<str>, Failure);

/// A row of Locust's `_failures.csv`.
#[derive(Debug, Clone)]
pub struct FailureRow {
    pub occurrences: u64,
    pub first_seen: SystemTime,
    pub last_seen: SystemTime,
}

/// One second of history, for one entry.
#[derive(Debug, Clone)]
pub struct HistoryRow {
    pub unix_seconds: u64,
    /// Seconds since the run started.
    pub elapsed: f64,
    pub users: usize,
    pub method: String,
    pub name: String,
    pub rps: f64,
    pub fps: f64,
    /// Locust's percentiles over the last 10 s (ms), in the order of [`PERCENTILES`].
    pub percentiles: [f64; 11],
    pub total_requests: u64,
    pub total_failures: u64,
    pub total_median_ms: f64,
    pub total_mean_ms: f64,
    pub total_min_ms: f64,
    pub total_max_ms: f64,
    pub total_mean_bytes: f64,
    /// The mean recall of the answers scored over the last 10 s (`load --recall`), if any were.
    pub recall: Option<f64>,
    /// p95 of this second's requests alone (ms; 0 when none), what recovery is judged by.
    pub second_p95: f64,
    /// Rows (vectors) the entry's requests had added so far.
    pub total_rows: u64,
}

impl HistoryRow {
    /// Percentile `s` (one of [`PERCENTILES`]) over the last 10 s, ms; 0 for another statistic.
    pub fn percentile(&self, s: Stat) -> f64 {
        PERCENTILES
            .iter()
            .position(|(p, _)| *p == s)
            .map_or(0.0, |i| self.percentiles[i])
    }
}

/// Everything a run measured.
#[derive(Debug, Clone)]
pub struct Stats {
    pub started: Instant,
    started_wall: SystemTime,
    /// When the measurement ended (the run's duration is `ended - started`).
    pub ended: Option<Instant>,
    /// Per (method, name), sorted.
    pub entries: BTreeMap<(&'static str, std::sync::Arc<str>), Entry>,
    pub total: Entry,
    /// How late requests were sent after their due time (ns): the generator's own lateness (open
    /// model; zero in the closed model, where a request is due when it is sent).
    pub lateness: Histogram<u64>,
    /// Per (method, name, failure): how often, first and last seen.
    pub failures: BTreeMap<FailureKey, FailureRow>,
    pub history: Vec<HistoryRow>,
    last_tick: Instant,
    /// See [`Stats::recovery`].
    pub(crate) recovery: Option<Option<f64>>,
}

impl Default for Stats {
    fn default() -> Self {
        Self::new()
    }
}

impl Stats {
    pub fn new() -> Self {
        let now = Instant::now();
        Self {
            started: now,
            started_wall: SystemTime::now(),
            ended: None,
            entries: BTreeMap::new(),
            total: Entry::new("", "Aggregated"),
            lateness: record::latency_histogram(),
            failures: BTreeMap::new(),
            history: Vec::new(),
            last_tick: now,
            recovery: None,
        }
    }

    pub fn add(&mut self, o: &RequestOutcome) {
        match self.entries.get_mut(&(o.method, o.name.clone())) {
            Some(e) => e.add(o),
            None => {
                let mut e = Entry::new(o.method, &o.name);
                e.add(o);
                self.entries.insert((o.method, o.name.clone()), e);
            }
        }
        self.total.add(o);
        self.lateness.saturating_record(
            o.sent
                .saturating_duration_since(o.intended)
                .as_nanos()
                .max(1) as u64,
        );
        if let Some(failure) = &o.failure {
            let seen = self.wall(o.done);
            self.failures
                .entry((o.method, o.name.clone(), failure.clone()))
                .and_modify(|f| {
                    f.occurrences += 1;
                    f.last_seen = seen;
                })
                .or_insert(FailureRow {
                    occurrences: 1,
                    first_seen: seen,
                    last_seen: seen,
                });
        }
    }

    fn wall(&self, at: Instant) -> SystemTime {
        self.started_wall + at.saturating_duration_since(self.started)
    }

    /// The run's duration so far (or in all, once ended).
    pub fn elapsed(&self) -> Duration {
        self.ended
            .unwrap_or_else(Instant::now)
            .saturating_duration_since(self.started)
    }

    /// Requests per second over the run.
    pub fn rps(&self, e: &Entry) -> f64 {
        e.requests as f64 / self.elapsed().as_secs_f64().max(1e-9)
    }

    /// A shaped run's recovery after its spike (`None` when the shape has none): `Some(None)` when
    /// it did not recover before the run ended. Set after the run ([`super::shape::recovery`]).
    pub fn recovery(&self) -> Option<Option<f64>> {
        self.recovery
    }

    /// Rows (vectors) added per second over the run.
    pub fn vectors_per_second(&self, e: &Entry) -> f64 {
        e.rows as f64 / self.elapsed().as_secs_f64().max(1e-9)
    }

    /// The history rows of request name `name` (any method).
    pub fn history_of<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a HistoryRow> {
        self.history
            .iter()
            .filter(move |r| !r.method.is_empty() && r.name == name)
    }

    /// Closes a second of history (called once per second by the runner).
    pub fn tick(&mut self, users: usize) {
        let now = Instant::now();
        let secs = now.duration_since(self.last_tick).as_secs_f64().max(1e-9);
        self.last_tick = now;
        let unix_seconds = self
            .wall(now)
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let elapsed = now.duration_since(self.started).as_secs_f64();
        let mut rows = Vec::with_capacity(self.entries.len() + 1);
        for e in self
            .entries
            .values_mut()
            .chain(std::iter::once(&mut self.total))
        {
            let window = e.window_histogram();
            let second_p95 = quantile_ms(&e.current, 0.95);
            let recall = e.window_recall();
            let (n, f) = e.tick();
            let mut percentiles = [0.0; 11];
            for (slot, (s, _)) in percentiles.iter_mut().zip(PERCENTILES) {
                *slot = quantile_ms(&window, quantile(s));
            }
            rows.push(HistoryRow {
                unix_seconds,
                elapsed,
                users,
                method: e.method.clone(),
                name: e.name.clone(),
                rps: n as f64 / secs,
                fps: f as f64 / secs,
                percentiles,
                total_requests: e.requests,
                total_failures: e.failures,
                total_median_ms: e.ms(0.5),
                total_mean_ms: e.mean_ms(),
                total_min_ms: e.min_ms(),
                total_max_ms: e.ms(1.0),
                total_mean_bytes: if e.requests == 0 {
                    0.0
                } else {
                    e.bytes as f64 / e.requests as f64
                },
                recall,
                second_p95,
                total_rows: e.rows,
            });
        }
        self.history.extend(rows);
    }

    /// The Aggregated rows of the history.
    pub fn total_history(&self) -> impl Iterator<Item = &HistoryRow> {
        self.history.iter().filter(|r| r.method.is_empty())
    }

    /// The entry of request name `name` (any method).
    pub fn entry(&self, name: &str) -> Option<&Entry> {
        self.entries.values().find(|e| e.name == name)
    }

    /// Every name's entry, then Aggregated.
    pub fn entries_and_total(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values().chain(std::iter::once(&self.total))
    }

    /// The failures as Locust lists them — by method, name and the failure's text — each with its
    /// text (the `Error` column).
    pub fn failure_table(&self) -> Vec<(&'static str, &str, String, &FailureRow)> {
        let mut rows: Vec<_> = self
            .failures
            .iter()
            .map(|((method, name, failure), row)| {
                (*method, name.as_ref(), failure.to_string(), row)
            })
            .collect();
        rows.sort_by(|a, b| (a.0, a.1, &a.2).cmp(&(b.0, b.1, &b.2)));
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn outcome(name: &str, at: Instant, recall: Option<(usize, f64)>, rows: u64) -> RequestOutcome {
        RequestOutcome {
            method: "SQL",
            name: Arc::from(name),
            intended: at,
            sent: at,
            done: at + Duration::from_millis(2),
            status: None,
            failure: None,
            bytes: 0,
            recall,
            rows,
        }
    }

    #[test]
    fn history_keeps_each_names_recall_over_ten_seconds_and_its_rows() {
        let mut s = Stats::new();
        let t = s.started;
        // Second 1: recall 1.0 and 0.5; second 2: 0.0; the writer adds 5 rows each second.
        s.add(&outcome("search", t, Some((0, 1.0)), 0));
        s.add(&outcome("search", t, Some((1, 0.5)), 0));
        s.add(&outcome("insert", t, None, 5));
        s.tick(1);
        s.add(&outcome("search", t, Some((2, 0.0)), 0));
        s.add(&outcome("insert", t, None, 5));
        s.tick(1);
        let search: Vec<_> = s.history_of("search").collect();
        assert_eq!(search.len(), 2);
        assert_eq!(search[0].recall, Some(0.75));
        // The window holds both seconds: (1.0 + 0.5 + 0.0) / 3.
        assert_eq!(search[1].recall, Some(0.5));
        assert_eq!(search[1].total_rows, 0);
        let insert: Vec<_> = s.history_of("insert").collect();
        assert_eq!(
            insert.iter().map(|r| r.total_rows).collect::<Vec<_>>(),
            [5, 10]
        );
        assert_eq!(insert[0].recall, None, "nothing scored");
        // Eleven quiet seconds later the window has forgotten every answer.
        for _ in 0..WINDOW_SECONDS {
            s.tick(1);
        }
        assert_eq!(s.history_of("search").last().unwrap().recall, None);
        assert_eq!((s.entry("insert").unwrap().rows, s.total.rows), (10, 10));
        s.ended = Some(s.started + Duration::from_secs(4));
        assert_eq!(s.vectors_per_second(&s.total), 2.5);
    }
}
