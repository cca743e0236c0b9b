//! What every handler shares: the flags, and the loaded model with its engine (absent
//! while the model loads: handlers answer 503 then, `/health` says "loading").

use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::http::StatusCode;
use llama_rs::{ChatTemplate, DraftKind, Embedder, Engine, EngineHandle, Model, Speculation};

use crate::args::Args;
use crate::error::ApiError;

/// The served model.
pub struct Loaded {
    /// The model.
    pub model: Model,
    /// Submits requests (the engine thread owns the context).
    pub engine: EngineHandle,
    /// Owner of the engine thread (stopped when the server stops).
    pub owner: Mutex<Option<Engine>>,
    /// The chat template (`--chat-template`, else the GGUF's); `None`: chat requests are
    /// a 400 that says how to give one.
    pub template: Option<ChatTemplate>,
    /// Why there is no template.
    pub template_error: Option<String>,
    /// Name the model is served under.
    pub id: String,
    /// When it was loaded (Unix seconds).
    pub created: u64,
    /// The embedding context, made on the first embeddings request.
    pub embedder: Mutex<Option<Embedder>>,
    /// Tokens one request may hold (prompt + generated).
    pub n_ctx: usize,
    /// Speculative decoding for every request (`--spec-type`), when set.
    pub speculation: Option<Speculation>,
}

/// Shared state.
pub struct AppState {
    /// The flags.
    pub args: Args,
    /// The API key, if one is required.
    pub api_key: Option<String>,
    /// Set once the model is loaded.
    pub loaded: OnceLock<Loaded>,
    /// Set if loading failed.
    pub load_error: OnceLock<String>,
    /// Server start.
    pub started: Instant,
}

impl AppState {
    /// The loaded model, or a 503 while it loads (or after loading failed).
    pub fn loaded(&self) -> Result<&Loaded, ApiError> {
        match (self.loaded.get(), self.load_error.get()) {
            (Some(l), _) => Ok(l),
            (None, Some(e)) => {
                Err(ApiError::status(StatusCode::SERVICE_UNAVAILABLE, format!("model failed to load: {e}")))
            }
            (None, None) => Err(ApiError::status(StatusCode::SERVICE_UNAVAILABLE, "loading model")),
        }
    }
}

/// The model path: `-m`, else `$LLAMA_RS_CHAT_MODEL`, else the fetched default chat model.
pub fn model_path(args: &Args) -> Result<PathBuf, String> {
    if let Some(m) = &args.model {
        return Ok(m.clone());
    }
    if let Some(p) = std::env::var_os("LLAMA_RS_CHAT_MODEL").filter(|v| !v.is_empty()) {
        return Ok(p.into());
    }
    let cache = match std::env::var_os("LLAMA_RS_CACHE").filter(|v| !v.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => std::env::var_os("XDG_CACHE_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache"))
            .join("llama-rs"),
    };
    let p = cache.join("models").join(DEFAULT_CHAT_MODEL);
    if p.is_file() {
        Ok(p)
    } else {
        Err(format!(
            "no -m given and the default chat model is not at {}: run `python3 vendor/fetch.py chat-model` \
             (or pass -m MODEL.gguf)",
            p.display()
        ))
    }
}

/// File name of the default chat model (SmolLM2-135M-Instruct Q4_1).
pub const DEFAULT_CHAT_MODEL: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// Loads the model, its template and the engine.
pub fn load(args: &Args) -> Result<Loaded, String> {
    let path = model_path(args)?;
    let mut mp = args.model_params().map_err(|e| e.to_string())?;
    let mut ep = args.engine_params().map_err(|e| e.to_string())?;
    if args.n_gpu_layers == "auto" {
        // `-ngl auto`: as many layers as the dry-run memory plan says fit.
        let make = || args.model_params().unwrap_or_default();
        let f = llama_rs::fit(&path, make, &ep.context_params(), &llama_rs::FitParams::default())
            .map_err(|e| format!("-ngl auto: {e}"))?;
        log::info!("-ngl auto: {:?} ({})", f.gpu_layers, f.reason);
        mp = f.apply(mp);
    }
    let model = Model::load(&path, mp).map_err(|e| format!("{}: {e}", path.display()))?;
    if ep.n_ctx == 0 {
        ep.n_ctx = model.n_ctx_train();
    }
    let (template, template_error) = match template(args, &model) {
        Ok(t) => (Some(t), None),
        Err(e) => (None, Some(e)),
    };
    let speculation = speculation(args)?;
    let engine = match &args.model_draft {
        None => Engine::new(&model, ep.clone()),
        Some(d) => {
            let dp = args.draft_model_params().map_err(|e| e.to_string())?;
            let draft = Model::load(d, dp).map_err(|e| format!("--model-draft {}: {e}", d.display()))?;
            Engine::with_draft_model(&model, ep.clone(), &draft)
        }
    }
    .map_err(|e| e.to_string())?;
    let id = args.alias.clone().unwrap_or_else(|| {
        path.file_name().map(|f| f.to_string_lossy().trim_end_matches(".gguf").to_string()).unwrap_or_default()
    });
    let created = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    Ok(Loaded {
        engine: engine.handle(),
        owner: Mutex::new(Some(engine)),
        model,
        template,
        template_error,
        id,
        created,
        embedder: Mutex::new(None),
        n_ctx: ep.n_ctx as usize,
        speculation,
    })
}

fn speculation(args: &Args) -> Result<Option<Speculation>, String> {
    let drafter = match (args.spec_type.as_str(), &args.model_draft) {
        ("none" | "draft" | "draft-simple", Some(_)) => DraftKind::Model,
        ("draft" | "draft-simple", None) => return Err("--spec-type draft needs --model-draft".into()),
        (t, Some(_)) => return Err(format!("--spec-type {t} and --model-draft: choose one drafter")),
        ("none", None) => return Ok(None),
        (t, None) => ngram(t, args)?,
    };
    if !(1..=64).contains(&args.draft_max) {
        return Err(format!("--draft-max {}: must be in 1..=64", args.draft_max));
    }
    Ok(Some(Speculation { drafter, max_draft: args.draft_max, ..Default::default() }))
}

fn ngram(spec_type: &str, args: &Args) -> Result<DraftKind, String> {
    Ok(match spec_type {
        "ngram" | "ngram-simple" => DraftKind::Ngram { n_min: args.draft_min.max(1), n_max: 6.max(args.draft_min) },
        "ngram-map" | "ngram-map-k" => DraftKind::NgramMap { n: 3, min_count: 1 },
        t => return Err(format!("--spec-type {t}: expected none, ngram, ngram-map or draft")),
    })
}

fn template(args: &Args, model: &Model) -> Result<ChatTemplate, String> {
    let bos = model.vocab().bos().and_then(|t| model.vocab().token_to_piece(t, true).ok()).unwrap_or_default();
    let eos = model.vocab().eos().and_then(|t| model.vocab().token_to_piece(t, true).ok()).unwrap_or_default();
    let file = match (&args.chat_template_file, &args.chat_template) {
        (Some(f), _) => Some(f.clone()),
        (None, Some(t)) if std::path::Path::new(t).is_file() => Some(PathBuf::from(t)),
        _ => None,
    };
    if let Some(f) = file {
        let src = std::fs::read_to_string(&f).map_err(|e| format!("--chat-template-file {}: {e}", f.display()))?;
        return ChatTemplate::jinja(&src, &bos, &eos).map_err(|e| e.to_string());
    }
    if let Some(name) = &args.chat_template {
        return ChatTemplate::builtin(name).map_err(|e| e.to_string());
    }
    ChatTemplate::from_model(model).map_err(|e| {
        format!("{e}; this model has no chat template: start the server with --chat-template NAME (e.g. chatml)")
    })
}
