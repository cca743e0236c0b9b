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

/// A MoE model that does not fit whole keeps its experts in host memory before any layer
/// leaves the GPU: the fewest leading layers' experts that make the rest fit, and only
/// when all experts in host memory are not enough, fewer layers. Needs a GPU device for
/// the placement (the lavapipe CI stage has one; `gpu-test --fit-only` runs the 14B-shaped
/// MoE on real GPUs); on the CPU alone it checks the model, the expert count and the
/// placement parameters load and run.
#[test]
fn fit_moves_moe_experts_to_host_memory_before_layers() {
    let dir = llama_testkit::fixtures::TempDir::new("fit-moe");
    let path = dir.join("moe-tiny.gguf");
    let src = match std::env::var_os("LLAMA_CPP_SRC") {
        Some(p) => std::path::PathBuf::from(p),
        None => std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../vendor/llama.cpp"),
    };
    let shape = llama_testkit::SyntheticShape::named("moe-tiny").unwrap();
    llama_testkit::write_synthetic_qwen2(shape, &src.join("models/ggml-vocab-qwen2.gguf"), &path, 5, 1).unwrap();
    let ctx = ContextParams::default().n_ctx(512).n_batch(64).n_ubatch(64);
    // The experts of some layers in host memory: loads and decodes on any machine.
    let m = llama_rs::Model::load(&path, ModelParams::default().experts_on_cpu_layers(2)).unwrap();
    assert_eq!((m.n_expert(), m.n_layer()), (16, 4));
    let mut c = m.context(ctx.clone()).unwrap();
    let toks = m.vocab().tokenize("The capital of France is", true, false).unwrap();
    let mut b = llama_rs::Batch::new(64, 1).unwrap();
    b.add_sequence(&toks, 0, 0, true).unwrap();
    c.decode(&mut b).unwrap();
    assert!(c.logits_last().unwrap().iter().all(|x| x.is_finite()));
    drop(c);
    drop(m);

    let Some(gpu) = llama_rs::Device::all().into_iter().find(|d| d.kind != DeviceType::Cpu) else {
        let f = fit(&path, ModelParams::default, &ctx, &FitParams::default()).unwrap();
        assert_eq!((f.gpu_layers, f.experts_on_cpu_layers), (GpuLayers::Count(0), 0));
        eprintln!("no GPU device: the placement part runs in the lavapipe stage and on GPUs");
        return;
    };
    let on_gpu = |p: ModelParams| llama_rs::MemoryPlan::estimate(&path, p, &ctx).unwrap().device_total(&gpu.name);
    let whole = on_gpu(ModelParams::default().gpu_layers(GpuLayers::All));
    let dense_only = on_gpu(ModelParams::default().gpu_layers(GpuLayers::All).experts_on_cpu());
    assert!(dense_only + (8 << 20) < whole, "experts in host memory: {dense_only} vs whole {whole} bytes");
    let budget = |bytes: u64| FitParams { margin_bytes: 0, budgets: Some(vec![(gpu.name.clone(), bytes)]) };

    // Between the two: every layer on the GPU, some layers' experts in host memory.
    let b1 = (whole + dense_only) / 2;
    let f = fit(&path, ModelParams::default, &ctx, &budget(b1)).unwrap();
    let k = f.experts_on_cpu_layers;
    assert_eq!(f.gpu_layers, GpuLayers::All, "{}", f.reason);
    assert!((1..4).contains(&k), "{}", f.reason);
    assert!(f.reason.contains(&format!("first {k} of 4 layers")), "{}", f.reason);
    assert!(f.plan.as_ref().unwrap().device_total(&gpu.name) <= b1);
    let one_less = on_gpu(ModelParams::default().gpu_layers(GpuLayers::All).experts_on_cpu_layers(k - 1));
    assert!(one_less > b1, "the experts of {} layers would have been enough", k - 1);
    // The choice loads and runs.
    let m = llama_rs::Model::load(&path, f.apply(ModelParams::default())).unwrap();
    let mut c = m.context(ctx.clone()).unwrap();
    b.clear();
    b.add_sequence(&toks, 0, 0, true).unwrap();
    c.decode(&mut b).unwrap();
    drop(c);
    drop(m);

    // Below the dense part: all experts in host memory and fewer layers on the GPU
    // (between what 0 layers need — the output's compute buffer stays on the GPU — and
    // every layer without its experts).
    let zero = on_gpu(ModelParams::default().gpu_layers(GpuLayers::Count(0)).experts_on_cpu_layers(4));
    assert!(zero < dense_only, "0 layers {zero} vs every layer without experts {dense_only} bytes");
    let b2 = (zero + dense_only) / 2;
    let f = fit(&path, ModelParams::default, &ctx, &budget(b2)).unwrap();
    assert_eq!(f.experts_on_cpu_layers, 4, "{}", f.reason);
    assert!(matches!(f.gpu_layers, GpuLayers::Count(n) if n <= 4), "{}", f.reason);
    assert!(f.reason.contains("every layer's experts in host memory"), "{}", f.reason);
    if let Some(plan) = &f.plan {
        assert!(plan.device_total(&gpu.name) <= b2);
    }
}
