//! Images, timed side by side with llama.cpp's `llama-mtmd-cli` built from the same tree:
//! the image's encode time and the time to first token (encode + prompt decode) with one
//! image (llama-mtmd-cli's prompt eval time, which spans the encode), and a second question about the same image with and without the prefix cache.
//! The projector is synthetic (Gemma 3 layout, random weights) in a ViT shape given by
//! the flags: speed does not depend on weight values.
//!
//! ```sh
//! cargo run --release -p llama-devtools --bin media-bench -- \
//!     --model gemma-3-270m-q4_k_m.gguf --cli "$(scripts/llama-tools.sh)/llama-mtmd-cli" -r 3
//! ```

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use clap::Parser;
use llama_rs::{ContextParams, GenerateParams, Model, Projector, ProjectorParams, Prompt, SamplerConfig, Session};

#[derive(Parser)]
struct Args {
    /// The text model (the projector is written for its embedding size).
    #[arg(long)]
    model: PathBuf,
    /// llama.cpp's llama-mtmd-cli (omit to time ours only).
    #[arg(long)]
    cli: Option<PathBuf>,
    /// The image (default: llama.cpp's tools/mtmd/test-1.jpeg).
    #[arg(long, default_value = "vendor/llama.cpp/tools/mtmd/test-1.jpeg")]
    image: PathBuf,
    /// ViT width, layers, FFN width; input side and patch; pooling.
    #[arg(long, default_value_t = 768)]
    width: u64,
    #[arg(long, default_value_t = 12)]
    layers: u64,
    #[arg(long, default_value_t = 3072)]
    ff: u64,
    #[arg(long, default_value_t = 448)]
    image_size: u64,
    #[arg(long, default_value_t = 14)]
    patch: u64,
    #[arg(long, default_value_t = 4)]
    merge: u64,
    #[arg(short = 'r', long, default_value_t = 3)]
    reps: usize,
    #[arg(short = 't', long, default_value_t = 2)]
    threads: i32,
    /// Offload the projector and the model to the GPU (`-ngl 99` for the CLI).
    #[arg(long)]
    gpu: bool,
}

const PROMPT: &str =
    "<start_of_turn>user\n<__media__> Describe the picture in detail.<end_of_turn>\n<start_of_turn>model\n";
const SECOND: &str = "<start_of_turn>user\n<__media__> What colours does it have?<end_of_turn>\n<start_of_turn>model\n";

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let ngl = if a.gpu { "all" } else { "0" };
    let mp = llama_rs::ModelParams::default().gpu_layers(if a.gpu {
        llama_rs::GpuLayers::All
    } else {
        llama_rs::GpuLayers::Count(0)
    });
    let model = Model::load(&a.model, mp)?;
    let shape = llama_testkit::Gemma3Projector {
        n_embd_text: model.n_embd_inp() as u64,
        image_size: a.image_size,
        patch_size: a.patch,
        n_merge: a.merge,
        n_embd: a.width,
        n_ff: a.ff,
        n_head: a.width / 64,
        n_layer: a.layers,
    };
    let mmproj = std::env::temp_dir().join(format!("media-bench-{}.gguf", std::process::id()));
    llama_testkit::write_gemma3_mmproj(&mmproj, &shape, 1)?;
    let n_tokens = shape.n_image_tokens();
    eprintln!(
        "projector: ViT {}×{} layers, {}px / {}px patches, {} tokens per image ({:.0} MB)",
        a.width,
        a.layers,
        a.image_size,
        a.patch,
        n_tokens,
        std::fs::metadata(&mmproj)?.len() as f64 / 1e6
    );
    let cparams = ContextParams::default().n_ctx(4096).n_batch(2048).n_ubatch(512).n_threads(a.threads as u32);
    let pp = ProjectorParams::default().n_threads(a.threads).use_gpu(a.gpu);
    let bytes = std::fs::read(&a.image)?;
    let greedy = GenerateParams { max_tokens: Some(1), sampler: SamplerConfig::greedy(), ..Default::default() };

    // Ours: encode alone, and TTFT (decode + encode + prompt, one token) in a fresh session.
    let mut proj = Projector::load(&mmproj, &model, pp.clone())?;
    let image = Arc::new(proj.media(&bytes)?);
    let prompt = proj.tokenize(PROMPT, &[&image], true)?;
    let idx = prompt.chunks().iter().position(|c| c.kind != llama_rs::ChunkKind::Text).unwrap();
    let (mut enc, mut ttft, mut warm, mut cold2) = (vec![], vec![], vec![], vec![]);
    for _ in 0..a.reps {
        let t = Instant::now();
        proj.encode(&prompt, idx)?;
        enc.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let mut session = Session::new(model.context(cparams.clone())?)?;
    session.set_projector(Some(Projector::load(&mmproj, &model, pp.clone())?))?;
    let media = |text: &str| Prompt::Media { text: text.into(), media: vec![image.clone()] };
    for _ in 0..a.reps {
        session.reset();
        let t = Instant::now();
        session.generate(media(PROMPT), &greedy)?.text()?;
        ttft.push(t.elapsed().as_secs_f64() * 1e3);
        // A second question about the same image: its cells are kept.
        let t = Instant::now();
        session.generate(media(SECOND), &greedy)?.text()?;
        warm.push(t.elapsed().as_secs_f64() * 1e3);
        session.reset();
        let t = Instant::now();
        session.generate(media(SECOND), &greedy)?.text()?;
        cold2.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let (enc, ttft, warm, cold2) = (median(enc), median(ttft), median(warm), median(cold2));
    println!("ours: encode {enc:.1} ms, TTFT {ttft:.1} ms (one image, {} prompt positions)", prompt.n_pos());
    println!(
        "ours: second question about the same image: TTFT {warm:.1} ms with the prefix cache, {cold2:.1} ms without ({:.1}x)",
        cold2 / warm
    );

    // llama-mtmd-cli: its own timing lines (encode; prompt eval; load excluded).
    if let Some(cli) = &a.cli {
        let (mut cenc, mut cttft) = (vec![], vec![]);
        for _ in 0..a.reps {
            let out = Command::new(cli)
                .args(["-m".as_ref(), a.model.as_os_str(), "--mmproj".as_ref(), mmproj.as_os_str()])
                .args(["--image".as_ref(), a.image.as_os_str()])
                .args(["-p", PROMPT, "-n", "1", "--temp", "0", "-t", &a.threads.to_string(), "-c", "4096"])
                .args(["-b", "2048", "-ub", "512", "-ngl", ngl, "--jinja", "--perf", "-lv", "4"])
                .args(["--chat-template", "{% for m in messages %}{{ m.content }}{% endfor %}"])
                .args(if a.gpu { &[][..] } else { &["--no-mmproj-offload"][..] })
                .output()?;
            let log = String::from_utf8_lossy(&out.stderr);
            anyhow::ensure!(out.status.success(), "llama-mtmd-cli failed:\n{log}");
            let ms_after = |key: &str| -> Option<f64> {
                let line = log.lines().find(|l| l.contains(key))?;
                let rest = &line[line.find(key)? + key.len()..];
                rest.split_whitespace().find_map(|w| w.parse::<f64>().ok())
            };
            let e =
                ms_after("mtmd batch encoding done in").ok_or_else(|| anyhow::anyhow!("no encode time in:\n{log}"))?;
            let p = ms_after("prompt eval time =").ok_or_else(|| anyhow::anyhow!("no prompt eval time in:\n{log}"))?;
            cenc.push(e);
            // llama.cpp's prompt timer runs from the first prompt decode to the last, and
            // the image is encoded between them: it is the time to the first token.
            cttft.push(p);
        }
        let (cenc, cttft) = (median(cenc), median(cttft));
        println!("llama-mtmd-cli: encode {cenc:.1} ms, TTFT (its prompt eval time, encode included) {cttft:.1} ms");
        println!("ratio (llama-mtmd-cli / ours): encode {:.2}x, TTFT {:.2}x", cenc / enc, cttft / ttft);
    }
    if std::env::var_os("MEDIA_BENCH_KEEP").is_some() {
        eprintln!("kept {}", mmproj.display());
    } else {
        std::fs::remove_file(&mmproj).ok();
    }
    Ok(())
}
