//! A `cpu-all` build (every CPU variant of ggml as a module, the best one picked at run
//! time): every variant this CPU can run gives the reference variant's greedy tokens,
//! and its logits within a stated tolerance. The reference is `x64`, the baseline with no
//! SIMD at all: the plain C kernels every other variant is an optimisation of.
//!
//! Each variant runs in its own process (a process loads one CPU backend):
//! `LLAMA_RS_CPU_VARIANT=<name>` with this binary's `variant_child` test, which writes
//! the prompt's last logits and the greedy steps to a file. In a build with the CPU
//! backend linked in (the default `cpu-native`) there are no variants, and the test says
//! so; `scripts/test-cpu-variants.sh` runs it in the `cpu-all` build and checks that it
//! compared them.
use llama_testkit::fixtures as common;
use std::process::Command;

const CHILD_ENV: &str = "LLAMA_RS_TEST_VARIANT_OUT";
const STEPS: usize = 24;
const TOP: usize = 5;
/// Allowed |logit - x64's logit| over the whole vocabulary (262144 logits, the top ones
/// near 20): largest and RMS. The variants compute the same arithmetic in other orders,
/// with other weight layouts (AVX2 and later repack Q4_K) and f16 rounding in other
/// places; through 18 layers that moves logits by up to 1.24 (RMS 0.34, haswell and
/// alderlake), measured on the default model on this project's CI CPU. A broken kernel
/// (a wrong tile config, a bad shuffle) moves them by far more and changes the first
/// greedy token.
const LOGIT_MAX_TOL: f32 = 2.0;
const LOGIT_RMS_TOL: f64 = 0.5;
/// Greedy texts may part only at a near tie of the reference: where the variant's token
/// is within this of x64's best (measured: 0.018, at step 11).
const TIE: f32 = 0.25;

/// Runs only in a child process: one variant's prompt logits and greedy steps.
#[test]
fn variant_child() {
    let Ok(out) = std::env::var(CHILD_ENV) else { return };
    let steps = steps();
    let model = common::model();
    let mut ctx = common::ctx();
    let prompt = model.vocab().tokenize(common::PROMPT, true, false).unwrap();
    let mut logits = common::prefill(&mut ctx, &prompt);
    let mut text = String::new();
    let v = llama_rs::backend::cpu_variant().expect("a cpu-all build");
    text.push_str(&format!("variant {}\n", v.name));
    text.push_str(&format!("logits {}\n", logits.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(" ")));
    let mut b = llama_rs::Batch::new(1, 1).unwrap();
    for pos in (prompt.len() as i32..).take(steps) {
        let mut idx: Vec<usize> = (0..logits.len()).collect();
        idx.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
        let top: Vec<String> = idx[..TOP].iter().map(|&i| format!("{i}:{}", logits[i])).collect();
        text.push_str(&format!("step {}\n", top.join(" ")));
        b.clear();
        b.add(llama_rs::Token(idx[0] as i32), pos, &[0], true).unwrap();
        ctx.decode(&mut b).unwrap();
        logits = ctx.logits(0).unwrap().to_vec();
    }
    std::fs::write(out, text).unwrap();
}

/// Greedy steps: `STEPS`, or fewer for a run under an emulator or on a larger model
/// (`LLAMA_RS_TEST_VARIANT_STEPS`, read by the children and the parent alike).
fn steps() -> usize {
    std::env::var("LLAMA_RS_TEST_VARIANT_STEPS").map_or(STEPS, |s| s.parse().unwrap())
}

struct Run {
    logits: Vec<f32>,
    /// Per step: the top tokens with their logits, best first (the first is the greedy one).
    steps: Vec<Vec<(i32, f32)>>,
}

fn run_variant(name: &str, dir: &std::path::Path) -> Run {
    let out = dir.join(format!("{name}.txt"));
    let st = Command::new(std::env::current_exe().unwrap())
        .args(["variant_child", "--exact", "--nocapture", "--test-threads", "1"])
        .env(CHILD_ENV, &out)
        .env("LLAMA_RS_CPU_VARIANT", name)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "variant {name}: {}:\n{}",
        llama_testkit::child::exit_reason(&st.status),
        String::from_utf8_lossy(&st.stderr)
    );
    let text = std::fs::read_to_string(&out).unwrap();
    let mut run = Run { logits: Vec::new(), steps: Vec::new() };
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("variant ") {
            assert_eq!(v, name, "the child loaded another variant than it was told");
        } else if let Some(l) = line.strip_prefix("logits ") {
            run.logits = l.split(' ').map(|x| x.parse().unwrap()).collect();
        } else if let Some(s) = line.strip_prefix("step ") {
            run.steps.push(
                s.split(' ')
                    .map(|p| {
                        let (t, l) = p.split_once(':').unwrap();
                        (t.parse().unwrap(), l.parse().unwrap())
                    })
                    .collect(),
            );
        }
    }
    assert_eq!(run.steps.len(), steps());
    run
}

#[test]
fn every_runnable_variant_matches_the_reference() {
    let Some(chosen) = llama_rs::backend::cpu_variant() else {
        eprintln!("cpu variants: this build links its CPU backend (no variants to compare)");
        return;
    };
    let runnable: Vec<&str> = chosen.built.iter().filter(|(_, s)| *s > 0).map(|(n, _)| n.as_str()).collect();
    assert!(runnable.contains(&"x64"), "no x64 reference among {:?}", chosen.built);
    assert!(runnable.contains(&chosen.name.as_str()));
    // The best-scored variant is the default choice.
    let best = chosen.built.iter().max_by_key(|(_, s)| *s).unwrap();
    assert!(chosen.forced || chosen.score == best.1, "{chosen:?}");
    let dir = common::TempDir::new("cpu-variants");
    let reference = run_variant("x64", dir.path());
    let mut report = Vec::new();
    for name in runnable.iter().filter(|n| **n != "x64") {
        let r = run_variant(name, dir.path());
        let d = common::max_diff(&r.logits, &reference.logits);
        assert_eq!(r.logits.len(), reference.logits.len());
        let rms = (r.logits.iter().zip(&reference.logits).map(|(a, b)| f64::from(a - b).powi(2)).sum::<f64>()
            / r.logits.len() as f64)
            .sqrt();
        assert!(d <= LOGIT_MAX_TOL, "{name}: prompt logits differ from x64 by up to {d} (> {LOGIT_MAX_TOL})");
        assert!(rms <= LOGIT_RMS_TOL, "{name}: prompt logits differ from x64 by {rms} RMS (> {LOGIT_RMS_TOL})");
        // Greedy tokens: equal at every step, except where the reference itself has a
        // near tie (its top two within the tolerance): from there on the texts may part.
        let mut same = 0;
        for (i, (a, b)) in r.steps.iter().zip(&reference.steps).enumerate() {
            if a[0].0 == b[0].0 {
                same += 1;
                continue;
            }
            let tie = b.iter().any(|(t, l)| *t == a[0].0 && b[0].1 - l <= TIE);
            assert!(
                tie,
                "{name}: step {i} chose {} where x64 chose {} (x64's top: {b:?}; {name}'s: {a:?})",
                a[0].0, b[0].0
            );
            break;
        }
        report.push(format!("{name}: |Δlogit| max {d:.3}, RMS {rms:.3}; greedy steps equal {same}/{}", steps()));
    }
    eprintln!(
        "cpu variants compared with x64 (tolerance: max {LOGIT_MAX_TOL}, RMS {LOGIT_RMS_TOL}, ties {TIE}):\n  {}",
        report.join("\n  ")
    );
    eprintln!("cpu variants compared: {}", report.len());
    assert!(!report.is_empty(), "only x64 can run here: nothing to compare");
}
