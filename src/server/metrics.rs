//! Prometheus metrics of the service (text exposition at `GET /metrics`).

use anyhow::Result;
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

/// The service's metrics, registered in a registry of its own.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// End-to-end search latency (the seeds' name, so their dashboards and greps keep working).
    pub search_duration: Histogram,
    /// Responses by route and status code.
    pub responses: IntCounterVec,
    /// Requests refused with 429, by bucket.
    pub rate_limited: IntCounterVec,
    /// Limiter calls that failed because Redis did not answer.
    pub limiter_errors: IntCounter,
    /// Database lookups of API keys not in the cache, by result (`found`, `unknown`).
    pub key_lookups: IntCounterVec,
    /// Client connections open now.
    pub open_connections: IntGauge,
    /// Client connections the service closed, by reason (`header_timeout`, `keepalive_timeout`,
    /// `evicted` to admit another at the connection limit, `shutdown`).
    pub connections_closed: IntCounterVec,
}

impl Metrics {
    pub fn new() -> Result<Self> {
        let registry = Registry::new();
        let search_duration = Histogram::with_opts(
            HistogramOpts::new(
                "commontrace_search_duration_seconds",
                "End-to-end search latency",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0,
            ]),
        )?;
        let responses = IntCounterVec::new(
            Opts::new(
                "capbench_http_responses_total",
                "HTTP responses by route and status",
            ),
            &["route", "status"],
        )?;
        let rate_limited = IntCounterVec::new(
            Opts::new("capbench_rate_limited_total", "Requests refused with 429"),
            &["bucket"],
        )?;
        let limiter_errors = IntCounter::new(
            "capbench_limiter_errors_total",
            "Rate-limiter calls that failed (Redis unavailable)",
        )?;
        let key_lookups = IntCounterVec::new(
            Opts::new(
                "capbench_key_lookups_total",
                "Database lookups of API keys not in the cache, by result",
            ),
            &["result"],
        )?;
        let open_connections =
            IntGauge::new("capbench_open_connections", "Client connections open now")?;
        let connections_closed = IntCounterVec::new(
            Opts::new(
                "capbench_connections_closed_total",
                "Client connections closed by the service, by reason",
            ),
            &["reason"],
        )?;
        registry.register(Box::new(search_duration.clone()))?;
        registry.register(Box::new(responses.clone()))?;
        registry.register(Box::new(rate_limited.clone()))?;
        registry.register(Box::new(limiter_errors.clone()))?;
        registry.register(Box::new(key_lookups.clone()))?;
        registry.register(Box::new(open_connections.clone()))?;
        registry.register(Box::new(connections_closed.clone()))?;
        Ok(Self {
            registry,
            search_duration,
            responses,
            rate_limited,
            limiter_errors,
            key_lookups,
            open_connections,
            connections_closed,
        })
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}
