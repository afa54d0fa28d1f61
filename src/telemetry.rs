//! Logs and metrics: tracing setup and the Prometheus text exposition at `/metrics`.
//!
//! Metrics are plain atomics and one small mutex-guarded map, updated once per request; rendering
//! happens only when `/metrics` is scraped. Nothing here sits on the hot path beyond that.

use crate::config::LogFormat;
use crate::store::StoreStats;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Installs the global tracing subscriber (once; later calls are ignored, which keeps tests simple).
pub fn init_logging(format: LogFormat, filter: &str) {
    init_logging_to(format, filter, std::io::stderr);
}

/// [`init_logging`] to another writer; every line passes through the secret redaction
/// (`security::redact`).
pub fn init_logging_to<W>(format: LogFormat, filter: &str, writer: W)
where
    W: for<'a> tracing_subscriber::fmt::MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(crate::security::redact::Redacting(writer));
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Upper bounds of the latency histogram, in seconds.
const LATENCY_BOUNDS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// Request counters and the latency histogram.
#[derive(Debug, Default)]
pub struct Metrics {
    /// (interaction, status) -> count.
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    /// Non-cumulative bucket counts; the last slot is +Inf.
    latency: [AtomicU64; LATENCY_BOUNDS.len() + 1],
    latency_sum_micros: AtomicU64,
    latency_count: AtomicU64,
}

impl Metrics {
    /// Records one finished request.
    pub fn record(&self, interaction: &'static str, status: u16, elapsed: Duration) {
        if let Ok(mut m) = self.requests.lock() {
            *m.entry((interaction, status)).or_default() += 1;
        }
        let secs = elapsed.as_secs_f64();
        let slot = LATENCY_BOUNDS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(LATENCY_BOUNDS.len());
        self.latency[slot].fetch_add(1, Ordering::Relaxed);
        self.latency_sum_micros.fetch_add(
            u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        self.latency_count.fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition, including the store's counters.
    pub fn render(&self, store: &StoreStats) -> String {
        let mut out = String::new();
        out.push_str(
            "# HELP huitong_requests_total HTTP requests by FHIR interaction and status.\n",
        );
        out.push_str("# TYPE huitong_requests_total counter\n");
        if let Ok(m) = self.requests.lock() {
            for ((interaction, status), n) in m.iter() {
                let _ = writeln!(
                    out,
                    "huitong_requests_total{{interaction=\"{interaction}\",status=\"{status}\"}} {n}"
                );
            }
        }
        out.push_str("# HELP huitong_request_duration_seconds Request latency.\n");
        out.push_str("# TYPE huitong_request_duration_seconds histogram\n");
        let mut cumulative = 0;
        for (i, bound) in LATENCY_BOUNDS.iter().enumerate() {
            cumulative += self.latency[i].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "huitong_request_duration_seconds_bucket{{le=\"{bound}\"}} {cumulative}"
            );
        }
        cumulative += self.latency[LATENCY_BOUNDS.len()].load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "huitong_request_duration_seconds_bucket{{le=\"+Inf\"}} {cumulative}"
        );
        let sum = self.latency_sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "huitong_request_duration_seconds_sum {sum}");
        let _ = writeln!(
            out,
            "huitong_request_duration_seconds_count {}",
            self.latency_count.load(Ordering::Relaxed)
        );
        let counters = [
            (
                "huitong_cache_hits_total",
                "Reads answered from the cache.",
                store.cache_hits,
            ),
            (
                "huitong_cache_misses_total",
                "Reads that went to the store.",
                store.cache_misses,
            ),
            (
                "huitong_store_write_batches_total",
                "Group commits of the store writer.",
                store.write_batches,
            ),
            (
                "huitong_store_write_jobs_total",
                "Units of work run by the store writer.",
                store.write_jobs,
            ),
        ];
        for (name, help, v) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        }
        out.push_str("# HELP huitong_store_write_batch_size Units of work per group commit.\n");
        out.push_str("# TYPE huitong_store_write_batch_size histogram\n");
        for (le, n) in &store.batch_size_buckets {
            let le = if *le == u64::MAX {
                "+Inf".to_string()
            } else {
                le.to_string()
            };
            let _ = writeln!(
                out,
                "huitong_store_write_batch_size_bucket{{le=\"{le}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "huitong_store_write_batch_size_count {}",
            store.write_batches
        );
        let _ = writeln!(
            out,
            "huitong_store_write_batch_size_sum {}",
            store.write_jobs
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counts_and_histogram() {
        let m = Metrics::default();
        m.record("read", 200, Duration::from_micros(300));
        m.record("read", 200, Duration::from_millis(3));
        m.record("create", 400, Duration::from_secs(10));
        let text = m.render(&StoreStats {
            cache_hits: 7,
            ..Default::default()
        });
        assert!(text.contains("huitong_requests_total{interaction=\"read\",status=\"200\"} 2"));
        assert!(text.contains("huitong_requests_total{interaction=\"create\",status=\"400\"} 1"));
        assert!(text.contains("huitong_request_duration_seconds_bucket{le=\"0.0005\"} 1"));
        assert!(text.contains("huitong_request_duration_seconds_bucket{le=\"0.005\"} 2"));
        assert!(text.contains("huitong_request_duration_seconds_bucket{le=\"+Inf\"} 3"));
        assert!(text.contains("huitong_cache_hits_total 7"));
    }
}
