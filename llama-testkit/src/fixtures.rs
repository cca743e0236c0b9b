//! What the integration tests share: the real default model, loaded once per test binary;
//! greedy helpers; scratch directories removed on drop.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use llama_rs::{Batch, Context, ContextParams, Model, ModelParams, Token};

pub const PROMPT: &str = "The capital of France is";
/// llama.cpp CLI, temp 0, on the default model (see shared BUILDING.md).
pub const CLI_GREEDY: &str = " the capital of the country of France. It is the largest city in France.";

pub fn model() -> &'static Model {
    static M: OnceLock<Model> = OnceLock::new();
    M.get_or_init(|| {
        let path = crate::default_model_path().expect("default model (python3 vendor/fetch.py model)");
        Model::load(path, ModelParams::default()).expect("load default model")
    })
}

/// Whether layers run on a GPU (default ModelParams offload everything): exact-text
/// expectations taken from the CPU build of llama.cpp only hold on the CPU.
pub fn on_gpu() -> bool {
    llama_rs::Device::all()
        .iter()
        .any(|d| matches!(d.kind, llama_rs::DeviceType::Gpu | llama_rs::DeviceType::IntegratedGpu))
}

/// Largest absolute difference.
pub fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

pub fn params() -> ContextParams {
    ContextParams::default().n_ctx(1024).n_batch(512).n_ubatch(512).n_threads(2)
}

pub fn ctx() -> Context {
    model().context(params()).unwrap()
}

/// Decodes `prompt` into seq 0 from position 0 and returns the logits of its last token.
pub fn prefill(ctx: &mut Context, prompt: &[Token]) -> Vec<f32> {
    let mut b = Batch::new(prompt.len().max(1), 1).unwrap();
    b.add_sequence(prompt, 0, 0, true).unwrap();
    ctx.decode(&mut b).unwrap();
    ctx.logits_last().unwrap().to_vec()
}

/// Greedy continuation of `seq` starting after `prompt` (already decoded), `n` tokens.
pub fn greedy_continue(ctx: &mut Context, seq: i32, mut pos: i32, first_logits: &[f32], n: usize) -> Vec<Token> {
    let mut out = Vec::new();
    let mut next = llama_rs::argmax(first_logits);
    let mut b = Batch::new(1, 1).unwrap();
    for _ in 0..n {
        out.push(next);
        if model().vocab().is_eog(next) {
            break;
        }
        b.clear();
        b.add(next, pos, &[seq], true).unwrap();
        ctx.decode(&mut b).unwrap();
        pos += 1;
        next = llama_rs::argmax(ctx.logits(0).unwrap());
    }
    out
}

pub fn greedy_text(ctx: &mut Context, prompt: &str, n: usize) -> String {
    let toks = model().vocab().tokenize(prompt, true, false).unwrap();
    let logits = prefill(ctx, &toks);
    let out = greedy_continue(ctx, 0, toks.len() as i32, &logits, n);
    model().vocab().detokenize(&out, false, false).unwrap()
}

/// A scratch directory of one test, removed when dropped (also when the test panics):
/// the suite writes models of 100+ MB, which must not pile up in /tmp run after run.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let d = std::env::temp_dir().join(format!("llama-rs-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
