//! Fit to memory on the real default model: with no GPU everything stays on the CPU
//! (said in the reason); with a GPU the small model fits whole and the plan says where.

use llama_rs::{fit, ContextParams, DeviceType, FitParams, GpuLayers, ModelParams};

#[test]
fn fit_chooses_layers_from_the_dry_run_plan() {
    let path = llama_testkit::default_model_path().unwrap();
    let ctx = ContextParams::default().n_ctx(4096);
    let f = fit(&path, ModelParams::default, &ctx, &FitParams::default()).unwrap();
    let gpus: Vec<_> = llama_rs::Device::all().into_iter().filter(|d| d.kind != DeviceType::Cpu).collect();
    if gpus.is_empty() {
        assert_eq!(f.gpu_layers, GpuLayers::Count(0));
        assert!(f.reason.contains("no GPU"), "{}", f.reason);
        assert_eq!(f.probes, 0);
    } else {
        // 250 MB of weights fit any GPU this suite runs on.
        assert_eq!(f.gpu_layers, GpuLayers::All, "{}", f.reason);
        let plan = f.plan.as_ref().unwrap();
        assert!(plan.device_total(&gpus[0].name) > 100 << 20, "{plan:?}");
        assert_eq!(f.probes, 1);
    }
    // A budget too small for anything: said so, 0 layers, no panic.
    let tiny = FitParams { margin_bytes: 0, budgets: Some(vec![("CPU".into(), 1 << 20)]) };
    let f = fit(&path, ModelParams::default, &ctx, &tiny).unwrap();
    assert_eq!(f.gpu_layers, GpuLayers::Count(0));
    assert!(f.reason.contains("does not fit"), "{}", f.reason);
}
