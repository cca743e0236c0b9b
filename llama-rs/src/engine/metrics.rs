//! [`Metrics`]: counters and latency percentiles the engine keeps (the server exposes
//! them as Prometheus).

use std::collections::VecDeque;

use serde::Serialize;

/// Latency samples in milliseconds: the most recent [`Latency::WINDOW`], with
/// percentiles over them.
#[derive(Clone, Default, PartialEq, Serialize)]
pub struct Latency {
    samples: VecDeque<f64>,
}

impl Latency {
    /// How many recent samples are kept.
    pub const WINDOW: usize = 4096;

    pub(crate) fn record(&mut self, ms: f64) {
        if self.samples.len() == Self::WINDOW {
            self.samples.pop_front();
        }
        self.samples.push_back(ms);
    }

    /// The `p`-th percentile (0..=100) of the kept samples; `None` without samples.
    pub fn percentile(&self, p: f64) -> Option<f64> {
        if self.samples.is_empty() {
            return None;
        }
        let mut v: Vec<f64> = self.samples.iter().copied().collect();
        v.sort_by(f64::total_cmp);
        let i = ((p.clamp(0.0, 100.0) / 100.0) * (v.len() - 1) as f64).round() as usize;
        Some(v[i])
    }

    /// Number of kept samples.
    pub fn count(&self) -> usize {
        self.samples.len()
    }
}

impl std::fmt::Debug for Latency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = |q| self.percentile(q).map(|v| format!("{v:.1}")).unwrap_or_else(|| "-".into());
        write!(f, "Latency {{ n: {}, p50: {}, p95: {} }}", self.count(), p(50.0), p(95.0))
    }
}

/// A snapshot of an engine's counters.
///
/// ```
/// let m = llama_rs::Metrics::default();
/// assert_eq!(m.ttft_ms.percentile(50.0), None);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Metrics {
    /// Requests waiting for a sequence.
    pub queued: usize,
    /// Requests holding a sequence.
    pub active: usize,
    /// KV cells in use (running and cached sequences).
    pub kv_used: usize,
    /// KV cells in the pool.
    pub kv_total: usize,
    /// Requests finished (any reason).
    pub finished: u64,
    /// Prompt tokens decoded (recomputation after preemption included).
    pub prompt_tokens: u64,
    /// Prompt tokens taken from the prefix cache.
    pub cached_tokens: u64,
    /// Tokens generated.
    pub generated_tokens: u64,
    /// Requests that reused a cached prefix.
    pub prefix_hits: u64,
    /// Cached prefixes dropped to make room.
    pub evictions: u64,
    /// Running requests preempted to make room.
    pub preemptions: u64,
    /// Requests whose prefix came from the host-memory prompt cache.
    pub ram_cache_hits: u64,
    /// Bytes the host-memory prompt cache holds.
    pub ram_cache_bytes: usize,
    /// The disk prompt cache's counters (`EngineParams::disk_cache`; zero when off).
    pub disk: crate::DiskCacheStats,
    /// Speculative decoding: drafted tokens verified.
    pub draft_tokens: u64,
    /// Speculative decoding: drafted tokens the target kept.
    pub draft_accepted_tokens: u64,
    /// Decode steps run.
    pub steps: u64,
    /// Seconds spent in decode steps.
    pub busy_s: f64,
    /// Time to first token.
    pub ttft_ms: Latency,
    /// Time between consecutive tokens of a request.
    pub itl_ms: Latency,
    /// Where the engine thread's time went, phase by phase.
    pub host: StepTimes,
}

/// Cumulative seconds the engine thread spent in each phase of its loop. On a GPU a
/// small model's step takes a few milliseconds, and the host work around the device's
/// compute decides throughput: this says which part of it to shorten.
///
/// ```
/// let t = llama_rs::StepTimes { sample_s: 0.5, wait_s: 1.5, ..Default::default() };
/// assert_eq!(t.phases().iter().map(|(_, s)| s).sum::<f64>(), 2.0);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct StepTimes {
    /// Admitting requests: the prefix cache, host-memory and disk cache look-ups and
    /// restores, evictions.
    pub admit_s: f64,
    /// Building each step's batch (prompt chunks, pending tokens, drafts).
    pub batch_s: f64,
    /// `llama_decode` itself: graph build and launch (on a CPU, the whole compute).
    pub decode_s: f64,
    /// Waiting for the device to finish the step (`llama_synchronize`).
    pub wait_s: f64,
    /// Sampling: reading the outputs and running each request's sampler chain.
    pub sample_s: f64,
    /// Detokenizing, stop strings and building pieces (the generation core's `emit`).
    pub emit_s: f64,
    /// Handing events to the requests' channels and freeing finished sequences.
    pub deliver_s: f64,
    /// The rest of a working loop: commands, metrics snapshots, bookkeeping.
    pub other_s: f64,
}

impl StepTimes {
    /// `(name, seconds)` of every phase, in loop order.
    pub fn phases(&self) -> [(&'static str, f64); 8] {
        [
            ("admit", self.admit_s),
            ("batch", self.batch_s),
            ("decode", self.decode_s),
            ("wait", self.wait_s),
            ("sample", self.sample_s),
            ("emit", self.emit_s),
            ("deliver", self.deliver_s),
            ("other", self.other_s),
        ]
    }
}

impl Metrics {
    /// Generated tokens per second of decode time.
    pub fn tokens_per_s(&self) -> f64 {
        if self.busy_s > 0.0 {
            self.generated_tokens as f64 / self.busy_s
        } else {
            0.0
        }
    }
}
