//! Fit to memory: how many layers go to the GPUs (and in what split) so that weights, KV
//! cache and compute buffers fit each device's free memory with a margin — decided from
//! llama.cpp's dry-run memory plan ([`MemoryPlan::estimate`]), not from file sizes.
//!
//! ```
//! use llama_rs::{fit, ContextParams, FitParams, ModelParams};
//! let path = llama_testkit::default_model_path()?;
//! let f = fit(&path, ModelParams::default, &ContextParams::default().n_ctx(4096), &FitParams::default())?;
//! println!("{:?}: {}", f.gpu_layers, f.reason);
//! let params = f.apply(ModelParams::default());
//! # let _ = params;
//! # Ok::<(), llama_rs::Error>(())
//! ```

use std::path::Path;

use serde::Serialize;

use crate::context::{ContextParams, MemoryPlan};
use crate::device::{Device, DeviceType};
use crate::error::Result;
use crate::model::{GpuLayers, Model, ModelParams};

/// What [`fit`] may use.
#[derive(Debug, Clone)]
pub struct FitParams {
    /// Bytes left free on every device (drivers, other programs, fragmentation).
    pub margin_bytes: u64,
    /// Memory to plan with per device name (e.g. `("CUDA0", 20 << 30)`) instead of what
    /// the devices report free; only these devices are used when set.
    pub budgets: Option<Vec<(String, u64)>>,
}

impl Default for FitParams {
    fn default() -> Self {
        FitParams { margin_bytes: 512 << 20, budgets: None }
    }
}

/// The plan [`fit`] chose, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Fit {
    /// Layers on the GPUs.
    pub gpu_layers: GpuLayers,
    /// Split over several GPUs, proportional to their budgets (empty for one GPU).
    pub tensor_split: Vec<f32>,
    /// The memory plan of the choice (`None` when there is no GPU).
    pub plan: Option<MemoryPlan>,
    /// In words: what fits where.
    pub reason: String,
    /// Dry runs made.
    pub probes: usize,
}

impl Fit {
    /// `params` with this fit's layers and split.
    pub fn apply(&self, params: ModelParams) -> ModelParams {
        let p = params.gpu_layers(self.gpu_layers);
        if self.tensor_split.is_empty() {
            p
        } else {
            p.tensor_split(self.tensor_split.clone())
        }
    }
}

/// The largest `n` in `0..=max` for which `fits(n)` holds, assuming fitting is monotone
/// (fewer layers never need more GPU memory); `None` if not even 0 fits. Probes
/// `max` first (the common case: everything fits), then bisects.
pub(crate) fn largest_fitting(max: u32, mut fits: impl FnMut(u32) -> Result<bool>) -> Result<Option<u32>> {
    if fits(max)? {
        return Ok(Some(max));
    }
    if !fits(0)? {
        return Ok(None);
    }
    let (mut lo, mut hi) = (0, max); // fits(lo), !fits(hi)
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if fits(mid)? {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Ok(Some(lo))
}

const GIB: f64 = (1u64 << 30) as f64;

/// Chooses the GPU layers (and split) for loading `path` with the parameters `base`
/// makes (a function: `ModelParams` holds a callback and is not `Clone`) and a context of
/// `ctx`, so that every device keeps `margin_bytes` free. Without a GPU: 0 layers.
pub fn fit(path: impl AsRef<Path>, base: impl Fn() -> ModelParams, ctx: &ContextParams, p: &FitParams) -> Result<Fit> {
    let path = path.as_ref();
    let budgets: Vec<(String, u64)> = match &p.budgets {
        Some(b) => b.clone(),
        None => {
            Device::all().into_iter().filter(|d| !matches!(d.kind, DeviceType::Cpu)).map(|d| (d.name, d.free)).collect()
        }
    };
    if budgets.is_empty() {
        return Ok(Fit {
            gpu_layers: GpuLayers::Count(0),
            tensor_split: Vec::new(),
            plan: None,
            reason: "no GPU device: everything on the CPU".into(),
            probes: 0,
        });
    }
    let sum: u64 = budgets.iter().map(|b| b.1).sum();
    let tensor_split: Vec<f32> =
        if budgets.len() > 1 { budgets.iter().map(|b| b.1 as f32 / sum.max(1) as f32).collect() } else { Vec::new() };
    let n_layer = {
        let mut mp = base();
        mp.no_alloc = true;
        Model::load(path, mp)?.n_layer()
    };
    let mut probes = 0;
    let mut last: Option<(u32, MemoryPlan)> = None;
    let with_layers = |n: u32| {
        let mp = base().gpu_layers(GpuLayers::Count(n));
        if tensor_split.is_empty() {
            mp
        } else {
            mp.tensor_split(tensor_split.clone())
        }
    };
    let fits_plan = |plan: &MemoryPlan| budgets.iter().all(|(d, b)| plan.device_total(d) + p.margin_bytes <= *b);
    let best = largest_fitting(n_layer + 1, |n| {
        probes += 1;
        let plan = MemoryPlan::estimate(path, with_layers(n), ctx)?;
        let ok = fits_plan(&plan);
        if ok && last.as_ref().is_none_or(|(m, _)| n >= *m) {
            last = Some((n, plan));
        }
        Ok(ok)
    })?;
    let used = |plan: &MemoryPlan| {
        budgets
            .iter()
            .map(|(d, b)| format!("{d} {:.2} of {:.2} GiB", plan.device_total(d) as f64 / GIB, *b as f64 / GIB))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let margin = p.margin_bytes as f64 / GIB;
    Ok(match best {
        Some(n) => {
            let plan = last.filter(|(m, _)| *m == n).map(|(_, plan)| plan);
            let what = if n > n_layer {
                format!("all {n_layer} layers and the output fit")
            } else {
                format!("{n} of {} layers fit (more would not)", n_layer + 1)
            };
            let reason = match &plan {
                Some(pl) => format!("{what}: {} (margin {margin:.2} GiB)", used(pl)),
                None => what,
            };
            let gpu_layers = if n > n_layer { GpuLayers::All } else { GpuLayers::Count(n) };
            Fit { gpu_layers, tensor_split, plan, reason, probes }
        }
        None => Fit {
            gpu_layers: GpuLayers::Count(0),
            tensor_split,
            plan: None,
            reason: format!(
                "does not fit even with no layers on the GPU (the KV cache and compute buffers alone need more than \
                 the budget minus {margin:.2} GiB): lower the context, use a quantized KV cache, or offload_kqv(false)"
            ),
            probes,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::largest_fitting;

    #[test]
    fn the_search_finds_the_largest_fitting_count_with_few_probes() {
        for limit in [0u32, 1, 7, 18, 26, 27] {
            let mut probes = 0;
            let got = largest_fitting(27, |n| {
                probes += 1;
                Ok(n <= limit)
            })
            .unwrap();
            assert_eq!(got, Some(limit));
            assert!(probes <= 2 + 5, "{probes} probes for limit {limit}");
        }
        assert_eq!(largest_fitting(27, |_| Ok(false)).unwrap(), None);
    }
}
