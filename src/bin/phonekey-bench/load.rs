//! A closed-loop load generator: N connections, each sending its next request
//! when the last one answered, for a fixed time after a warm-up.

use std::future::Future;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// `--mark`: the file that hears when each measured window starts and ends.
static MARKS: OnceLock<PathBuf> = OnceLock::new();

pub fn mark_windows_in(file: PathBuf) {
    let _ = MARKS.set(file);
}

/// Appends `line` to the `--mark` file, if there is one; a failure to write
/// it must not fail the run.
fn mark(line: &str) {
    let Some(path) = MARKS.get() else { return };
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut f| writeln!(f, "{line}"));
    if let Err(e) = written {
        eprintln!("phonekey-bench: --mark {}: {e}", path.display());
    }
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Measured {
    pub requests: u64,
    pub errors: u64,
    pub seconds: f64,
    pub rate: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// For steps of several requests (a login is four): the latencies of
    /// those requests one by one, from the `Laps` the step recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_p50_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_p99_ms: Option<f64>,
    /// The same for each kind of request in the step, in the step's order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub request_kinds: Vec<KindLatency>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct KindLatency {
    pub kind: &'static str,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// The latencies of the single requests inside multi-request steps, each
/// with its send time so that only those of the measured window count.
#[derive(Clone, Default)]
pub struct Laps(Arc<Mutex<Vec<Lap>>>);

struct Lap {
    sent: Instant,
    micros: u32,
    kind: &'static str,
}

impl Laps {
    /// Records a request of `kind` sent at `sent` that has just been answered.
    pub fn record(&self, kind: &'static str, sent: Instant) {
        if let Ok(mut laps) = self.0.lock() {
            laps.push(Lap {
                sent,
                micros: micros(sent.elapsed()),
                kind,
            });
        }
    }

    /// p50 and p99 of the requests sent from `from` on, all together and by
    /// kind; forgets them all.
    fn take_percentiles(&self, from: Instant) -> Option<((f64, f64), Vec<KindLatency>)> {
        let mut laps = std::mem::take(&mut *self.0.lock().ok()?);
        // In the step's order: the warm-up's first loop recorded them so.
        let mut kinds: Vec<&'static str> = Vec::new();
        for lap in &laps {
            if !kinds.contains(&lap.kind) {
                kinds.push(lap.kind);
            }
        }
        laps.retain(|lap| lap.sent >= from);
        let p50_p99 = |mut micros: Vec<u32>| {
            micros.sort_unstable();
            (percentile(&micros, 0.50), percentile(&micros, 0.99))
        };
        let by_kind = kinds
            .into_iter()
            .map(|kind| {
                let of_kind = laps.iter().filter(|l| l.kind == kind);
                let (p50_ms, p99_ms) = p50_p99(of_kind.map(|l| l.micros).collect());
                KindLatency {
                    kind,
                    p50_ms,
                    p99_ms,
                }
            })
            .collect();
        Some((p50_p99(laps.iter().map(|l| l.micros).collect()), by_kind))
    }
}

fn micros(d: Duration) -> u32 {
    d.as_micros().min(u32::MAX as u128) as u32
}

/// The `p` quantile of sorted microseconds, in milliseconds.
fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

/// What one request reported: success, or an error worth one line.
pub type Outcome = Result<(), String>;

/// Runs `step(worker)` on `connections` concurrent loops. A step that returns
/// `None` means the worker has run out of prepared input and stops early.
/// `laps`, if given, is what the step records of its single requests.
pub async fn run<F, Fut>(
    connections: usize,
    warmup: Duration,
    duration: Duration,
    laps: Option<&Laps>,
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
    let marker = MARKS.get().is_some().then(|| {
        tokio::spawn(async move {
            tokio::time::sleep_until(measure_from.into()).await;
            mark("measuring");
        })
    });
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
                    latencies.push(micros(sent.elapsed()));
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
    if let Some(marker) = marker {
        marker.abort();
        mark("done");
    }
    let seconds = ended
        .saturating_duration_since(measure_from)
        .as_secs_f64()
        .max(1e-6);
    latencies.sort_unstable();
    let requests = latencies.len() as u64;
    let per_request = laps.and_then(|l| l.take_percentiles(measure_from));
    let measured = Measured {
        requests,
        errors,
        seconds,
        rate: requests as f64 / seconds,
        p50_ms: percentile(&latencies, 0.50),
        p99_ms: percentile(&latencies, 0.99),
        request_p50_ms: per_request.as_ref().map(|((p50, _), _)| *p50),
        request_p99_ms: per_request.as_ref().map(|((_, p99), _)| *p99),
        request_kinds: per_request.map(|(_, kinds)| kinds).unwrap_or_default(),
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
