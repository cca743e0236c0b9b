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

use std::collections::HashMap;
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
    /// MoE models: the expert tensors of this many leading layers stay in host memory
    /// (llama.cpp's `--n-cpu-moe`); 0 for dense models or when everything fits.
    pub experts_on_cpu_layers: u32,
    /// The memory plan of the choice (`None` when there is no GPU).
    pub plan: Option<MemoryPlan>,
    /// In words: what fits where.
    pub reason: String,
    /// Dry runs made.
    pub probes: usize,
}

impl Fit {
    /// `params` with this fit's layers, split and expert placement.
    pub fn apply(&self, params: ModelParams) -> ModelParams {
        let p = params.gpu_layers(self.gpu_layers).experts_on_cpu_layers(self.experts_on_cpu_layers);
        if self.tensor_split.is_empty() {
            p
        } else {
            p.tensor_split(self.tensor_split.clone())
        }
    }
}

/// Narrows `lo < hi` with `pred(lo) != pred(hi)` (both already known) to two neighbours
/// with the same property, assuming `pred` changes once between them.
fn boundary(mut lo: u32, mut hi: u32, mut pred: impl FnMut(u32) -> Result<bool>, pred_lo: bool) -> Result<(u32, u32)> {
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if pred(mid)? == pred_lo {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Ok((lo, hi))
}

const GIB: f64 = (1u64 << 30) as f64;

/// Chooses the GPU layers (and split) for loading `path` with the parameters `base`
/// makes (a function: `ModelParams` holds a callback and is not `Clone`) and a context of
/// `ctx`, so that every device keeps `margin_bytes` free. Without a GPU: 0 layers.
///
/// For MoE models (`expert_count` > 0) that do not fit whole, the experts move to host
/// memory before layers do, as llama.cpp's `--fit` does: attention, KV cache and the
/// dense parts stay on the GPU (they run for every token) while only the chosen experts
/// of a token are read from host memory. The experts of the fewest leading layers that
/// make everything else fit go first; when even all experts in host memory are too much,
/// layers leave the GPU too.
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
            experts_on_cpu_layers: 0,
            plan: None,
            reason: "no GPU device: everything on the CPU".into(),
            probes: 0,
        });
    }
    let sum: u64 = budgets.iter().map(|b| b.1).sum();
    let tensor_split: Vec<f32> =
        if budgets.len() > 1 { budgets.iter().map(|b| b.1 as f32 / sum.max(1) as f32).collect() } else { Vec::new() };
    let (n_layer, n_expert) = {
        let mut mp = base();
        mp.no_alloc = true;
        let m = Model::load(path, mp)?;
        (m.n_layer(), m.n_expert())
    };
    let all = n_layer + 1; // the output layer counts as one more
    let mut probes = 0;
    let mut fitting: HashMap<(u32, u32), MemoryPlan> = HashMap::new();
    // Does (n layers on the GPUs, experts of the first k layers in host memory) fit?
    let mut probe = |n: u32, k: u32| -> Result<bool> {
        probes += 1;
        let mut mp = base().gpu_layers(GpuLayers::Count(n)).experts_on_cpu_layers(k);
        if !tensor_split.is_empty() {
            mp = mp.tensor_split(tensor_split.clone());
        }
        let plan = MemoryPlan::estimate(path, mp, ctx)?;
        let ok = budgets.iter().all(|(d, b)| plan.device_total(d) + p.margin_bytes <= *b);
        if ok {
            fitting.insert((n, k), plan);
        }
        Ok(ok)
    };
    let choice: Option<(u32, u32)> = if probe(all, 0)? {
        Some((all, 0))
    } else if n_expert > 0 && probe(all, n_layer)? {
        // Every layer fits once all experts are in host memory: keep as few there as works.
        Some((all, boundary(0, n_layer, |k| probe(all, k), false)?.1))
    } else {
        let k = if n_expert > 0 { n_layer } else { 0 };
        if probe(0, k)? {
            Some((boundary(0, all, |n| probe(n, k), true)?.0, k))
        } else {
            None
        }
    };
    let used = |plan: &MemoryPlan| {
        budgets
            .iter()
            .map(|(d, b)| format!("{d} {:.2} of {:.2} GiB", plan.device_total(d) as f64 / GIB, *b as f64 / GIB))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let margin = p.margin_bytes as f64 / GIB;
    Ok(match choice {
        Some((n, k)) => {
            let plan = fitting.remove(&(n, k));
            let layers = if n == all {
                format!("all {n_layer} layers and the output fit")
            } else {
                format!("{n} of {all} layers fit (more would not)")
            };
            let experts = match k {
                0 => String::new(),
                k if k == n_layer => " with every layer's experts in host memory".to_string(),
                k => format!(" with the experts of the first {k} of {n_layer} layers in host memory"),
            };
            let what = format!("{layers}{experts}");
            let reason = match &plan {
                Some(pl) => format!("{what}: {} (margin {margin:.2} GiB)", used(pl)),
                None => what,
            };
            let gpu_layers = if n == all { GpuLayers::All } else { GpuLayers::Count(n) };
            Fit { gpu_layers, tensor_split, experts_on_cpu_layers: k, plan, reason, probes }
        }
        None => Fit {
            gpu_layers: GpuLayers::Count(0),
            tensor_split,
            experts_on_cpu_layers: 0,
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
    use super::boundary;

    #[test]
    fn the_search_finds_where_fitting_changes_with_few_probes() {
        // Layers on the GPU: fits up to `limit` (fits(0) true, fits(28) false).
        for limit in [0u32, 1, 7, 18, 26, 27] {
            let mut probes = 0;
            let (lo, hi) = boundary(
                0,
                28,
                |n| {
                    probes += 1;
                    Ok(n <= limit)
                },
                true,
            )
            .unwrap();
            assert_eq!((lo, hi), (limit, limit + 1));
            assert!(probes <= 5, "{probes} probes for limit {limit}");
        }
        // Layers' experts in host memory: fits from `need` on (fits(0) false, fits(24) true).
        for need in [1u32, 2, 13, 24] {
            let (_, hi) = boundary(0, 24, |k| Ok(k >= need), false).unwrap();
            assert_eq!(hi, need);
        }
    }
}
