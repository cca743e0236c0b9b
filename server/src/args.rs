//! Command-line flags, named as llama-server's so its command lines work with the binary
//! name swapped. A llama-server flag we do not implement is an error that names it.

use std::path::PathBuf;

use clap::Parser;
use llama_rs::{EngineParams, FlashAttn, GpuLayers, KvType, LoadMode, ModelParams, SplitMode};

/// Flags of `llama-rs-server` (parse with [`parse_from`]: it accepts llama-server's
/// multi-letter short flags such as `-np`, `-ngl`, `-ctk`).
///
/// ```
/// let a = llama_rs_server::args::parse_from(["llama-rs-server", "-m", "m.gguf", "-np", "4", "-c", "8192"])?;
/// assert_eq!(a.parallel, 4);
/// assert_eq!(a.engine_params()?.n_ctx, 8192);
/// assert!(a.engine_params()?.kv_unified); // one pool by default
/// let b = llama_rs_server::args::parse_from(["llama-rs-server", "-np", "16", "-no-kvu"])?;
/// assert!(!b.engine_params()?.kv_unified); // a stream per slot, as llama-server's -np 16
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Parser)]
#[command(name = "llama-rs-server", version, about = "OpenAI-compatible server on llama-rs (llama-server's flags)")]
pub struct Args {
    /// Model GGUF (the first shard of a split model). Default: the fetched chat model
    /// (SmolLM2-135M-Instruct; `python3 vendor/fetch.py chat-model`).
    /// Repeat to serve several models (a request's `model` selects one; the first is the
    /// default).
    #[arg(short = 'm', long = "model")]
    pub model: Vec<PathBuf>,
    /// Serve every GGUF in this directory too, by file name without `.gguf` (loaded on the
    /// first request that names it).
    #[arg(long = "models-dir")]
    pub models_dir: Option<PathBuf>,
    /// Most models loaded at once; the least recently used (never the first) is unloaded
    /// to load another.
    #[arg(long = "models-max", default_value_t = 4)]
    pub models_max: usize,
    /// Memory (MiB, by the memory plans of model + context) the loaded models may take
    /// together; the least recently used are unloaded to stay within it.
    #[arg(long = "models-memory")]
    pub models_memory: Option<u64>,
    /// Name the model is served under (default: the file name without `.gguf`).
    #[arg(short = 'a', long)]
    pub alias: Option<String>,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on (0: any free port, printed at start).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Requests generated at once (more queue).
    #[arg(long = "parallel", visible_alias = "np", default_value_t = 4)]
    pub parallel: u32,
    /// KV tokens in the one pool all requests share (0: the model's training context).
    #[arg(short = 'c', long = "ctx-size", default_value_t = 4096)]
    pub ctx_size: u32,
    /// Tokens decoded per step at most (prompt chunks and running sequences together;
    /// llama-server's default).
    #[arg(short = 'b', long = "batch-size", default_value_t = 2048)]
    pub batch_size: u32,
    /// Micro-batch size (llama-server's default).
    #[arg(long = "ubatch-size", visible_alias = "ub", default_value_t = 512)]
    pub ubatch_size: u32,
    /// Threads (0: all cores).
    #[arg(short = 't', long = "threads", default_value_t = 0)]
    pub threads: u32,
    /// Layers on the GPU: a number, `all`, or `auto` (as many as fit with a margin, from
    /// the dry-run memory plan: `llama_rs::fit`).
    #[arg(long = "n-gpu-layers", visible_alias = "ngl", alias = "gpu-layers", default_value = "all")]
    pub n_gpu_layers: String,
    /// How to split over several GPUs: none, layer, row.
    #[arg(long = "split-mode", visible_alias = "sm", default_value = "layer")]
    pub split_mode: String,
    /// Fractions of the model per GPU, e.g. `3,1`.
    #[arg(long = "tensor-split", visible_alias = "ts", value_delimiter = ',')]
    pub tensor_split: Vec<f32>,
    /// The GPU for the whole model (split-mode none) or for intermediate results.
    #[arg(long = "main-gpu", visible_alias = "mg", default_value_t = 0)]
    pub main_gpu: i32,
    /// Flash attention: on, off, auto.
    #[arg(long = "flash-attn", visible_alias = "fa", default_value = "auto")]
    pub flash_attn: String,
    /// K cache type: f32, f16, bf16, q8_0, q4_0, q4_1, iq4_nl, q5_0, q5_1.
    #[arg(long = "cache-type-k", visible_alias = "ctk", default_value = "f16")]
    pub cache_type_k: String,
    /// V cache type (quantized types need flash attention).
    #[arg(long = "cache-type-v", visible_alias = "ctv", default_value = "f16")]
    pub cache_type_v: String,
    /// Read the model into memory instead of mapping it.
    #[arg(long)]
    pub no_mmap: bool,
    /// Lock the model in memory.
    #[arg(long)]
    pub mlock: bool,
    /// Require this key (`Authorization: Bearer KEY` or `x-api-key`); `/health` stays open.
    #[arg(long = "api-key")]
    pub api_key: Option<String>,
    /// Read the API key from the first line of this file.
    #[arg(long = "api-key-file")]
    pub api_key_file: Option<PathBuf>,
    /// Chat template: a built-in name (chatml, llama3, gemma, ...) or a Jinja file.
    #[arg(long = "chat-template")]
    pub chat_template: Option<String>,
    /// Chat template from a file (llama-server's flag).
    #[arg(long = "chat-template-file")]
    pub chat_template_file: Option<PathBuf>,
    /// Use the GGUF's Jinja template (always on here; accepted for llama-server's command lines).
    #[arg(long)]
    pub jinja: bool,
    /// Thinking models: `deepseek` (or `auto`) puts the `<think>` block into
    /// `reasoning_content`; `none` leaves it in `content`.
    #[arg(long = "reasoning-format", default_value = "auto", value_parser = ["auto", "deepseek", "none"])]
    pub reasoning_format: String,
    /// Thinking tokens: -1 unrestricted; 0 none (templates get `enable_thinking: false`,
    /// as llama-server passes); N: after N tokens inside `<think>` the block's end tag is
    /// generated, so the model answers. A request's `reasoning_budget` overrides it.
    #[arg(long = "reasoning-budget", default_value_t = -1, allow_hyphen_values = true,
          value_parser = clap::value_parser!(i32).range(-1..))]
    pub reasoning_budget: i32,
    /// With one served model, a request naming another model is a 404 (by default it is
    /// answered by the served model, as llama-server does: clients send `gpt-4o-mini`).
    #[arg(long = "strict-model-name")]
    pub strict_model_name: bool,
    /// Serve Prometheus metrics on `/metrics`.
    #[arg(long)]
    pub metrics: bool,
    /// Seconds a request may take before it is cancelled (0: no limit).
    #[arg(long = "timeout", visible_alias = "to", default_value_t = 600)]
    pub timeout: u64,
    /// Largest request body in bytes.
    #[arg(long = "body-limit", default_value_t = 8 << 20)]
    pub body_limit: usize,
    /// Reuse cached prompt prefixes across requests (default on).
    #[arg(long = "no-cache-prompt")]
    pub no_cache_prompt: bool,
    /// Generate greedy answers that do not depend on the other requests (CPU; see the
    /// engine's deterministic profile).
    #[arg(long)]
    pub deterministic: bool,
    /// Host memory for cached prompts, MiB (llama-server's flag): a slot's cached prompt
    /// is copied out before another request overwrites it and copied back when a later
    /// prompt starts with it. 0: off; -1: no limit.
    #[arg(long = "cache-ram", visible_alias = "cram", default_value_t = 8192, allow_negative_numbers = true)]
    pub cache_ram: i64,
    /// A directory for the prompt cache on disk (ours; llama-server has none): every
    /// finished request's cache is written there in the background, and a later request
    /// — also after a restart, or from another server sharing the directory — whose
    /// prompt starts with a stored prefix restores it instead of recomputing it. Entries
    /// are checksummed and keyed by model file, KV types, RoPE and adapters.
    #[arg(long = "cache-disk", value_name = "DIR")]
    pub cache_disk: Option<std::path::PathBuf>,
    /// Most MiB the disk prompt cache keeps (least recently used entries go first). Ours.
    #[arg(long = "cache-disk-max", value_name = "MiB", default_value_t = 16384)]
    pub cache_disk_max: u64,
    /// A multimodal projector for the model (llama-server's flag): chat requests may then
    /// carry images (OpenAI `image_url` data URLs, Anthropic `image` blocks, Ollama
    /// `images`) or audio (`input_audio`), as the projector allows.
    #[arg(long = "mmproj", value_name = "FILE")]
    pub mmproj: Option<std::path::PathBuf>,
    /// Run the projector on the GPU (llama-server's flag; the default).
    #[arg(long = "mmproj-offload", overrides_with = "no_mmproj_offload")]
    pub mmproj_offload: bool,
    /// Run the projector on the CPU (llama-server's flag).
    #[arg(long = "no-mmproj-offload")]
    pub no_mmproj_offload: bool,
    /// Directory for slot files (llama-server's flag): enables
    /// `POST /slots/{id}?action=save|restore|erase` with `{"filename": NAME}`.
    #[arg(long = "slot-save-path", value_name = "DIR")]
    pub slot_save_path: Option<std::path::PathBuf>,
    /// How long a step that reads prompts should take (ms) while several requests have
    /// work: a burst of prompts is read oldest first in steps this long, so the first
    /// answers start early and running streams keep their pace; 0: one step takes every
    /// waiting prompt token (up to -b). Only with the unified pool (-kvu). Ours
    /// (llama-server has none).
    #[arg(long = "prefill-step-ms", default_value_t = 200)]
    pub prefill_step_ms: u32,
    /// One KV pool for all slots (the default): any request may use the whole
    /// `--ctx-size`, and requests share cached prefixes.
    #[arg(long = "kv-unified", visible_alias = "kvu", overrides_with = "no_kv_unified")]
    pub kv_unified: bool,
    /// One KV stream of `--ctx-size / --parallel` cells per slot (llama-server's layout
    /// with `-np N`): a request is limited to its slot's share, but each token's attention
    /// reads only its own sequence's cells — with many concurrent requests on a CPU that
    /// is faster (docs/SERVER.md has the numbers).
    #[arg(long = "no-kv-unified", visible_alias = "no-kvu", overrides_with = "kv_unified")]
    pub no_kv_unified: bool,
    /// Speculative decoding: `ngram` (prompt lookup), `ngram-map`, `draft` (with
    /// `--model-draft`), `draft-mtp` (the model's own MTP head, loaded with it; models
    /// without one are served without speculation), or `none` (the default; `draft` when
    /// `--model-draft` is given).
    #[arg(long = "spec-type", default_value = "none")]
    pub spec_type: String,
    /// A smaller model with the same vocabulary that drafts for the model (speculative
    /// decoding for every request without a grammar).
    #[arg(long = "model-draft", visible_alias = "md")]
    pub model_draft: Option<PathBuf>,
    /// Layers of the draft model on the GPU (default: as `--n-gpu-layers`).
    #[arg(long = "n-gpu-layers-draft", visible_alias = "ngld", alias = "gpu-layers-draft")]
    pub n_gpu_layers_draft: Option<String>,
    /// Most tokens drafted per step.
    #[arg(long = "draft-max", alias = "draft", alias = "draft-n", default_value_t = 8)]
    pub draft_max: usize,
    /// n-gram drafter: shortest match.
    #[arg(long = "draft-min", default_value_t = 2)]
    pub draft_min: usize,
    /// The default `max_tokens` of a request (-1: until the context is full).
    #[arg(short = 'n', long = "n-predict", visible_alias = "predict", default_value_t = -1)]
    pub n_predict: i64,
}

/// An argument that cannot be used, with the reason.
#[derive(Debug)]
pub struct ArgError(pub String);

impl std::fmt::Display for ArgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ArgError {}

fn kv_type(flag: &str, v: &str) -> Result<KvType, ArgError> {
    v.parse().map_err(|e: llama_rs::Error| ArgError(format!("{flag}: {e}")))
}

impl Args {
    /// The engine's parameters from these flags.
    pub fn engine_params(&self) -> Result<EngineParams, ArgError> {
        let flash_attn = match self.flash_attn.as_str() {
            "on" | "1" | "true" => FlashAttn::On,
            "off" | "0" | "false" => FlashAttn::Off,
            "auto" => FlashAttn::Auto,
            v => return Err(ArgError(format!("--flash-attn {v}: expected on, off or auto"))),
        };
        if self.parallel == 0 {
            return Err(ArgError("--parallel must be at least 1".into()));
        }
        Ok(EngineParams {
            n_ctx: self.ctx_size,
            slots: self.parallel,
            step_tokens: self.batch_size,
            prefill_step_ms: self.prefill_step_ms,
            ubatch_tokens: Some(self.ubatch_size.min(self.batch_size)),
            n_threads: self.threads,
            flash_attn,
            type_k: kv_type("--cache-type-k", &self.cache_type_k)?,
            type_v: kv_type("--cache-type-v", &self.cache_type_v)?,
            prefix_cache: !self.no_cache_prompt,
            ram_cache_bytes: match self.cache_ram {
                n if n < 0 => usize::MAX,
                n => (n as usize).saturating_mul(1 << 20),
            },
            deterministic: self.deterministic,
            kv_unified: !self.no_kv_unified,
            disk_cache: self.cache_disk.clone(),
            disk_cache_bytes: self.cache_disk_max.saturating_mul(1 << 20),
            mmproj: self.mmproj.clone(),
            mmproj_gpu: !self.no_mmproj_offload,
            ..Default::default()
        })
    }

    /// The model's load parameters from these flags.
    pub fn model_params(&self) -> Result<ModelParams, ArgError> {
        self.model_params_with(&self.n_gpu_layers)
    }

    /// The draft model's load parameters (`--n-gpu-layers-draft`, else as the model's).
    pub fn draft_model_params(&self) -> Result<ModelParams, ArgError> {
        let ngl = self.n_gpu_layers_draft.as_deref().unwrap_or(&self.n_gpu_layers);
        self.model_params_with(if ngl == "auto" { "all" } else { ngl })
    }

    fn model_params_with(&self, n_gpu_layers: &str) -> Result<ModelParams, ArgError> {
        let gpu_layers = match n_gpu_layers {
            "all" | "auto" | "-1" => GpuLayers::All,
            n => GpuLayers::Count(
                n.parse().map_err(|_| ArgError(format!("--n-gpu-layers {n}: expected a number, all or auto")))?,
            ),
        };
        let split_mode = match self.split_mode.as_str() {
            "none" => SplitMode::None,
            "layer" => SplitMode::Layer,
            "row" => SplitMode::Row,
            v => return Err(ArgError(format!("--split-mode {v}: expected none, layer or row"))),
        };
        let load_mode = match (self.no_mmap, self.mlock) {
            (true, true) => LoadMode::Mlock,
            (false, true) => LoadMode::MmapMlock,
            (true, false) => LoadMode::None,
            (false, false) => LoadMode::Auto,
        };
        let mut p = ModelParams::default().gpu_layers(gpu_layers).split_mode(split_mode).main_gpu(self.main_gpu);
        p.load_mode = load_mode;
        if !self.tensor_split.is_empty() {
            p = p.tensor_split(self.tensor_split.clone());
        }
        if self.deterministic {
            p = p.no_repack(true);
        }
        Ok(p)
    }

    /// The API key, from `--api-key` or `--api-key-file`.
    pub fn api_key(&self) -> Result<Option<String>, ArgError> {
        if let Some(k) = &self.api_key {
            return Ok(Some(k.clone()));
        }
        match &self.api_key_file {
            Some(f) => {
                let s =
                    std::fs::read_to_string(f).map_err(|e| ArgError(format!("--api-key-file {}: {e}", f.display())))?;
                let k = s.lines().next().unwrap_or("").trim().to_string();
                if k.is_empty() {
                    return Err(ArgError(format!("--api-key-file {}: empty", f.display())));
                }
                Ok(Some(k))
            }
            None => Ok(None),
        }
    }
}

/// llama-server flags this server does not implement: named in the error instead of
/// clap's generic "unexpected argument".
const NOT_IMPLEMENTED: &[&str] = &[
    "--lora",
    "--lora-scaled",
    "--control-vector",
    "--rope-scaling",
    "--grp-attn-n",
    "--path",
    "--ssl-key-file",
    "--ssl-cert-file",
    "--embedding",
    "--embeddings",
    "--reranking",
    "--rerank",
    "--ctx-size-draft",
    "-cd",
];

/// llama-server's multi-letter short flags, spelled with one dash (`-ngl 99`); clap
/// knows them as long aliases (`--ngl`).
const MULTI_LETTER_SHORT: &[&str] = &[
    "-np", "-ngl", "-ctk", "-ctv", "-fa", "-ub", "-sm", "-ts", "-mg", "-to", "-md", "-ngld", "-kvu", "-no-kvu", "-cram",
];

/// Parses a command line (program name first): llama-server's multi-letter short flags
/// are accepted, and a llama-server flag that is not implemented here is an error that
/// names it.
pub fn parse_from<I, T>(argv: I) -> Result<Args, ArgError>
where
    I: IntoIterator<Item = T>,
    T: Into<String>,
{
    let mut out = Vec::new();
    for a in argv.into_iter().map(Into::into) {
        let flag = a.split('=').next().unwrap_or(&a).to_string();
        if NOT_IMPLEMENTED.contains(&flag.as_str()) {
            return Err(ArgError(format!("llama-server's {flag} is not implemented by llama-rs-server yet")));
        }
        out.push(if MULTI_LETTER_SHORT.contains(&flag.as_str()) { format!("-{a}") } else { a });
    }
    Args::try_parse_from(out).map_err(|e| ArgError(e.to_string()))
}

/// [`parse_from`] over the process's arguments; exits with clap's message (and `--help`
/// / `--version` output) on error.
pub fn parse() -> Args {
    let argv: Vec<String> = std::env::args().collect();
    for a in &argv[1..] {
        let flag = a.split('=').next().unwrap_or(a);
        if NOT_IMPLEMENTED.contains(&flag) {
            eprintln!("llama-rs-server: llama-server's {flag} is not implemented yet (see `llama-rs-server --help`)");
            std::process::exit(2);
        }
    }
    let argv = argv.into_iter().map(|a| {
        let flag = a.split('=').next().unwrap_or(&a);
        if MULTI_LETTER_SHORT.contains(&flag) {
            format!("-{a}")
        } else {
            a
        }
    });
    Args::parse_from(argv)
}
