//! A closed-loop load generator: N connections, each sending its next request
//! when the last one answered, for a fixed time after a warm-up.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Measured {
    pub requests: u64,
    pub errors: u64,
    pub seconds: f64,
    pub rate: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// What one request reported: success, or an error worth one line.
pub type Outcome = Result<(), String>;

/// Runs `step(worker)` on `connections` concurrent loops. A step that returns
/// `None` means the worker has run out of prepared input and stops early.
pub async fn run<F, Fut>(
    connections: usize,
    warmup: Duration,
    duration: Duration,
    step: F,
) -> (Measured, Option<String>)
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Option<Outcome>> + Send,
{
    let start = Instant::now();
    let measure_from = start + warmup;
    let deadline = measure_from + duration;
    let exhausted = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::with_capacity(connections);
    for worker in 0..connections {
        let step = step.clone();
        let exhausted = exhausted.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies: Vec<u32> = Vec::with_capacity(4096);
            let mut errors = 0u64;
            let mut first_error = None;
            let mut ended = deadline;
            loop {
                let sent = Instant::now();
                if sent >= deadline {
                    break;
                }
                let Some(outcome) = step(worker).await else {
                    exhausted.store(true, Ordering::Relaxed);
                    ended = Instant::now().max(measure_from);
                    break;
                };
                if sent >= measure_from {
                    latencies.push(sent.elapsed().as_micros().min(u32::MAX as u128) as u32);
                    if let Err(e) = outcome {
                        errors += 1;
                        first_error.get_or_insert(e);
                    }
                }
            }
            (latencies, errors, first_error, ended)
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    let mut ended = measure_from;
    for task in tasks {
        if let Ok((l, e, f, end)) = task.await {
            latencies.extend(l);
            errors += e;
            if first_error.is_none() {
                first_error = f;
            }
            ended = ended.max(end);
        }
    }
    let seconds = ended
        .saturating_duration_since(measure_from)
        .as_secs_f64()
        .max(1e-6);
    latencies.sort_unstable();
    let pct = |p: f64| -> f64 {
        if latencies.is_empty() {
            return 0.0;
        }
        let i = ((latencies.len() as f64 - 1.0) * p).round() as usize;
        latencies[i] as f64 / 1000.0
    };
    let requests = latencies.len() as u64;
    let measured = Measured {
        requests,
        errors,
        seconds,
        rate: requests as f64 / seconds,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
    };
    if exhausted.load(Ordering::Relaxed) && first_error.is_none() && requests == 0 {
        first_error = Some("ran out of prepared input before measuring".into());
    }
    (measured, first_error)
}

/// The median run by rate.
pub fn median(mut runs: Vec<Measured>) -> Measured {
    runs.sort_by(|a, b| a.rate.total_cmp(&b.rate));
    runs.get(runs.len() / 2).cloned().unwrap_or_default()
}
