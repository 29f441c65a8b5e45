//! Percentiles of latency samples.

use std::time::Duration;

pub struct Summary {
    pub median: Duration,
    pub p99: Duration,
}

pub fn summarize(samples: &mut [Duration]) -> Summary {
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    Summary {
        median: at(0.5),
        p99: at(0.99),
    }
}

pub fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
