//! The last hour of request counters, in memory, for the dashboard's
//! charts: one interval per ten seconds with requests, results, errors,
//! denials and a latency histogram — from the same place the Prometheus
//! counters are recorded, so the two agree.
//!
//! Prometheus histograms are cumulative over the process's life and the
//! exporter only renders text, so the hour is kept here. Intervals roll
//! over lazily on the clock (no task): a quiet interval is simply absent,
//! and reads fill it with zeros.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};

/// Seconds per interval.
pub const STEP_SECONDS: i64 = 10;

/// Intervals kept: one hour.
pub const INTERVALS: usize = 360;

/// Latency buckets: bucket `i` holds [100 µs · 2^(i/3), 100 µs · 2^((i+1)/3)),
/// so 64 buckets reach past four minutes, each at most 26% wide.
const BUCKETS: usize = 64;

/// One interval's counts.
#[derive(Debug, Clone, PartialEq)]
struct Interval {
    slot: i64,
    requests: u64,
    results: u64,
    errors: u64,
    denials: u64,
    latency: [u32; BUCKETS],
}

impl Interval {
    fn empty(slot: i64) -> Self {
        Self {
            slot,
            requests: 0,
            results: 0,
            errors: 0,
            denials: 0,
            latency: [0; BUCKETS],
        }
    }
}

/// One point of a chart: an interval's rates and latency quantiles.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// When the interval began.
    pub at: DateTime<Utc>,
    /// Requests per second (every front end, every outcome; for the
    /// interval still filling, over the seconds it has had).
    pub requests: f64,
    /// Requests per second that answered rows (queries, row-counting actions).
    pub results: f64,
    /// Failures per second (not denials).
    pub errors: f64,
    /// Refusals per second (authentication, policy, limits).
    pub denials: f64,
    /// Median latency in seconds (`None` without requests).
    pub p50: Option<f64>,
    /// 99th percentile latency in seconds.
    pub p99: Option<f64>,
}

/// The last hour, ten seconds at a time.
#[derive(Debug, Default)]
pub struct History {
    intervals: Mutex<VecDeque<Interval>>,
}

impl History {
    /// Counts a request that ended at `now` with `outcome` after `duration`.
    pub fn record(&self, now: DateTime<Utc>, outcome: &str, results: bool, duration: Duration) {
        let slot = now.timestamp().div_euclid(STEP_SECONDS);
        let mut intervals = self.lock();
        if intervals.back().is_none_or(|i| i.slot < slot) {
            intervals.push_back(Interval::empty(slot));
            while intervals.len() > INTERVALS {
                intervals.pop_front();
            }
        }
        // A clock stepping back lands in the newest interval.
        let Some(interval) = intervals.back_mut() else {
            return;
        };
        interval.requests += 1;
        interval.results += u64::from(results);
        match outcome {
            "error" => interval.errors += 1,
            "denied" => interval.denials += 1,
            _ => {}
        }
        interval.latency[bucket(duration)] += 1;
    }

    /// The hour before `now`, oldest first: [`INTERVALS`] points, the last
    /// being the interval still filling.
    pub fn samples(&self, now: DateTime<Utc>) -> Vec<Sample> {
        let last = now.timestamp().div_euclid(STEP_SECONDS);
        let first = last - INTERVALS as i64 + 1;
        let intervals = self.lock();
        let mut kept = intervals.iter().filter(|i| i.slot >= first).peekable();
        // The interval still filling is a rate over the seconds it has had.
        let filling =
            (now.timestamp_millis() - last * STEP_SECONDS * 1000).max(1000) as f64 / 1000.0;
        (first..=last)
            .map(|slot| {
                let seconds = if slot == last {
                    filling
                } else {
                    STEP_SECONDS as f64
                };
                match kept.next_if(|i| i.slot == slot) {
                    Some(interval) => sample(interval, seconds),
                    None => sample(&Interval::empty(slot), seconds),
                }
            })
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Interval>> {
        self.intervals.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn sample(interval: &Interval, seconds: f64) -> Sample {
    let per_second = |n: u64| n as f64 / seconds;
    Sample {
        at: DateTime::from_timestamp(interval.slot * STEP_SECONDS, 0).unwrap_or_default(),
        requests: per_second(interval.requests),
        results: per_second(interval.results),
        errors: per_second(interval.errors),
        denials: per_second(interval.denials),
        p50: quantile(&interval.latency, 0.5),
        p99: quantile(&interval.latency, 0.99),
    }
}

/// The bucket of a latency.
fn bucket(duration: Duration) -> usize {
    let tenths_of_ms = duration.as_secs_f64() / 1e-4;
    if tenths_of_ms <= 1.0 {
        return 0;
    }
    ((tenths_of_ms.log2() * 3.0).floor() as usize).min(BUCKETS - 1)
}

/// The upper bound of the bucket holding rank ⌈q·n⌉: within 26% above the
/// true quantile.
fn quantile(histogram: &[u32; BUCKETS], q: f64) -> Option<f64> {
    let n: u64 = histogram.iter().map(|&c| u64::from(c)).sum();
    if n == 0 {
        return None;
    }
    let rank = ((q * n as f64).ceil() as u64).max(1);
    let mut seen = 0;
    histogram
        .iter()
        .position(|&c| {
            seen += u64::from(c);
            seen >= rank
        })
        .map(|i| 1e-4 * 2f64.powf((i + 1) as f64 / 3.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap()
    }

    #[test]
    fn quantiles_bound_the_true_value_within_a_bucket() {
        let mut histogram = [0u32; BUCKETS];
        // 98 fast requests (2 ms) and 2 slow ones (1.5 s).
        histogram[bucket(Duration::from_millis(2))] += 98;
        histogram[bucket(Duration::from_millis(1500))] += 2;
        let p50 = quantile(&histogram, 0.5).unwrap();
        let p99 = quantile(&histogram, 0.99).unwrap();
        assert!((0.002..0.002 * 1.26).contains(&p50), "{p50}");
        assert!((1.5..1.5 * 1.26).contains(&p99), "{p99}");
        assert_eq!(quantile(&[0; BUCKETS], 0.5), None);
        assert_eq!(bucket(Duration::ZERO), 0);
        assert_eq!(bucket(Duration::from_secs(3600)), BUCKETS - 1);
    }

    #[test]
    fn intervals_roll_over_and_quiet_ones_read_as_zero() {
        let history = History::default();
        history.record(at(0), "ok", true, Duration::from_millis(5));
        history.record(at(3), "denied", false, Duration::from_millis(1));
        history.record(at(25), "error", false, Duration::from_millis(1));
        let samples = history.samples(at(29));
        assert_eq!(samples.len(), INTERVALS);
        let last = &samples[INTERVALS - 1];
        let quiet = &samples[INTERVALS - 2];
        let first = &samples[INTERVALS - 3];
        assert_eq!(
            (first.requests, first.results, first.denials),
            (0.2, 0.1, 0.1)
        );
        assert_eq!((quiet.requests, quiet.p50), (0.0, None));
        // The last interval has had 9 of its 10 seconds (at 29 s).
        assert_eq!((last.requests, last.errors), (1.0 / 9.0, 1.0 / 9.0));
        assert_eq!(last.at, at(20));
        // An hour later the old intervals have left the window.
        let later = history.samples(at(29 + 3600));
        assert!(later.iter().all(|s| s.requests == 0.0));
    }

    #[test]
    fn at_most_an_hour_is_kept() {
        let history = History::default();
        for i in 0..(INTERVALS as i64 + 50) {
            history.record(at(i * STEP_SECONDS), "ok", false, Duration::from_millis(1));
        }
        assert_eq!(history.lock().len(), INTERVALS);
    }
}
