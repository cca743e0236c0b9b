//! What every handler shares: the flags, and the loaded model with its engine (absent
//! while the model loads: handlers answer 503 then, `/health` says "loading").

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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
    /// The GGUF it was loaded from.
    pub path: std::path::PathBuf,
    /// When it was loaded (Unix seconds).
    pub created: u64,
    /// The embedding context, made on the first embeddings request.
    pub embedder: Mutex<Option<Embedder>>,
    /// Tokens one request may hold (prompt + generated).
    pub n_ctx: usize,
    /// Speculative decoding for every request (`--spec-type`), when set.
    pub speculation: Option<Speculation>,
    /// Bytes the memory plan predicted (0 without `--models-memory`).
    pub memory: u64,
    /// The projector's marker, when the model reads media (`--mmproj`).
    pub media_marker: Option<String>,
    /// Decodes a request's image or audio bytes with the model's projector.
    pub decode_media: MediaDecoder,
}

/// Decodes encoded media with a model's projector.
pub type MediaDecoder = Box<dyn Fn(&[u8]) -> llama_rs::Result<llama_rs::Media> + Send + Sync>;

/// One model the server serves: loaded at start (the first, which stays loaded) or on
/// the first request that names it.
pub struct Served {
    /// The name requests select it by.
    pub id: String,
    /// Its GGUF.
    pub path: PathBuf,
    state: Mutex<ServedState>,
    /// When a request last used it (the server's request counter), for LRU unloading.
    last_used: AtomicU64,
}

#[derive(Clone)]
enum ServedState {
    Unloaded,
    Ready(Arc<Loaded>),
    Failed(String),
}

impl Served {
    fn state(&self) -> ServedState {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
    fn set(&self, s: ServedState) -> ServedState {
        std::mem::replace(&mut *self.state.lock().unwrap_or_else(|p| p.into_inner()), s)
    }
    /// The loaded model, if it is.
    pub fn get(&self) -> Option<Arc<Loaded>> {
        match self.state() {
            ServedState::Ready(l) => Some(l),
            _ => None,
        }
    }
    /// Whether `name` (as a request's `model`) means this model: its id, with `.gguf`, or
    /// with ollama's `:latest`.
    fn answers_to(&self, name: &str) -> bool {
        name == self.id || name.trim_end_matches(".gguf") == self.id || name.strip_suffix(":latest") == Some(&self.id)
    }
}

/// Shared state.
pub struct AppState {
    /// The flags.
    pub args: Args,
    /// The API key, if one is required.
    pub api_key: Option<String>,
    /// The served models; the first is the default (for requests that name none, and for
    /// the endpoints that take no model) and is never unloaded.
    pub models: Vec<Served>,
    /// Loads one model at a time (other requests for it wait, then find it loaded).
    loader: tokio::sync::Mutex<()>,
    clock: AtomicU64,
    /// Server start.
    pub started: Instant,
    /// Responses kept for `previous_response_id` (`/v1/responses`).
    pub responses: ResponseStore,
}

impl AppState {
    /// The state for `args`: the models it names (not loaded yet).
    pub fn new(args: Args, api_key: Option<String>) -> Result<AppState, String> {
        let models = served_models(&args)?
            .into_iter()
            .map(|(id, path)| Served {
                id,
                path,
                state: Mutex::new(ServedState::Unloaded),
                last_used: AtomicU64::new(0),
            })
            .collect();
        Ok(AppState {
            args,
            api_key,
            models,
            loader: tokio::sync::Mutex::new(()),
            clock: AtomicU64::new(0),
            started: Instant::now(),
            responses: Default::default(),
        })
    }

    /// The default model, or a 503 while it loads (or after loading failed).
    pub fn loaded(&self) -> Result<Arc<Loaded>, ApiError> {
        let Some(first) = self.models.first() else {
            return Err(ApiError::status(StatusCode::SERVICE_UNAVAILABLE, "no model"));
        };
        match first.state() {
            ServedState::Ready(l) => {
                first.last_used.store(self.clock.fetch_add(1, Ordering::Relaxed), Ordering::Relaxed);
                Ok(l)
            }
            ServedState::Failed(e) => {
                Err(ApiError::status(StatusCode::SERVICE_UNAVAILABLE, format!("model failed to load: {e}")))
            }
            ServedState::Unloaded => Err(ApiError::status(StatusCode::SERVICE_UNAVAILABLE, "loading model")),
        }
    }

    /// The load error of the default model, once loading it failed.
    pub fn load_error(&self) -> Option<String> {
        match self.models.first()?.state() {
            ServedState::Failed(e) => Some(e),
            _ => None,
        }
    }

    /// Loads the default model (at start).
    pub fn load_default(&self) {
        if let Some(first) = self.models.first() {
            let s = match load_model(&self.args, &first.path, &first.id, true) {
                Ok(l) => ServedState::Ready(Arc::new(l)),
                Err(e) => {
                    log::error!("{e}");
                    ServedState::Failed(e)
                }
            };
            first.set(s);
        }
    }

    /// The model a request names (`None` or "": the default), loading it if it is not
    /// loaded; a name not served is a 404 that lists the served ones.
    pub async fn model(&self, name: Option<&str>) -> Result<Arc<Loaded>, ApiError> {
        let i = match name.filter(|n| !n.is_empty()) {
            None => 0,
            Some(n) => match self.models.iter().position(|m| m.answers_to(n)) {
                Some(i) => i,
                // One model: llama-server answers whatever the name (clients send
                // `gpt-4o-mini` by default); `--strict-model-name` refuses.
                None if self.models.len() == 1 && !self.args.strict_model_name => 0,
                None => {
                    let ids: Vec<&str> = self.models.iter().map(|m| m.id.as_str()).collect();
                    return Err(ApiError {
                        status: StatusCode::NOT_FOUND,
                        message: format!("model {n:?} is not served here (served: {ids:?})"),
                        param: Some("model".into()),
                        code: Some("model_not_found"),
                    });
                }
            },
        };
        if i == 0 {
            return self.loaded();
        }
        let m = &self.models[i];
        if let Some(l) = self.ready(i) {
            return Ok(l);
        }
        let _one = self.loader.lock().await;
        match m.state() {
            ServedState::Ready(l) => return Ok(l),
            ServedState::Failed(e) => {
                return Err(ApiError::status(StatusCode::SERVICE_UNAVAILABLE, format!("model failed to load: {e}")))
            }
            ServedState::Unloaded => {}
        }
        self.make_room(i);
        let (args, path, id) = (self.args.clone(), m.path.clone(), m.id.clone());
        let r = tokio::task::spawn_blocking(move || load_model(&args, &path, &id, false))
            .await
            .unwrap_or_else(|e| Err(format!("loading panicked: {e}")));
        match r {
            Ok(l) => {
                let l = Arc::new(l);
                m.set(ServedState::Ready(l.clone()));
                log::info!("loaded {} ({} MiB planned)", m.id, l.memory >> 20);
                Ok(self.ready(i).unwrap_or(l))
            }
            Err(e) => {
                log::error!("{e}");
                m.set(ServedState::Failed(e.clone()));
                Err(ApiError::status(StatusCode::SERVICE_UNAVAILABLE, format!("model failed to load: {e}")))
            }
        }
    }

    fn ready(&self, i: usize) -> Option<Arc<Loaded>> {
        let l = self.models[i].get()?;
        self.models[i].last_used.store(self.clock.fetch_add(1, Ordering::Relaxed), Ordering::Relaxed);
        Some(l)
    }

    /// Unloads the least recently used models (never the default) until model `i` may
    /// load: at most `--models-max` loaded, and within `--models-memory` by the memory
    /// plans. A model still answering requests is freed when they end.
    fn make_room(&self, i: usize) {
        let need = plan_bytes(&self.args, &self.models[i].path);
        let budget = self.args.models_memory.map(|m| m << 20);
        loop {
            let loaded: Vec<(usize, Arc<Loaded>)> =
                self.models.iter().enumerate().filter_map(|(k, m)| m.get().map(|l| (k, l))).collect();
            let used: u64 = loaded.iter().map(|(_, l)| l.memory).sum();
            let over_count = loaded.len() + 1 > self.args.models_max.max(1);
            let over_memory = budget.is_some_and(|b| used + need > b);
            if !over_count && !over_memory {
                return;
            }
            let lru = loaded
                .iter()
                .filter(|(k, _)| *k != 0)
                .min_by_key(|(k, _)| self.models[*k].last_used.load(Ordering::Relaxed));
            let Some(&(k, _)) = lru else { return };
            log::info!("unloading {} to make room for {}", self.models[k].id, self.models[i].id);
            if let ServedState::Ready(l) = self.models[k].set(ServedState::Unloaded) {
                // Dropping the last reference joins the engine thread: not on this one.
                tokio::task::spawn_blocking(move || drop(l));
            }
        }
    }

    /// Every loaded model.
    pub fn loaded_models(&self) -> Vec<Arc<Loaded>> {
        self.models.iter().filter_map(Served::get).collect()
    }
}

/// The memory plan's total for `path` with the server's flags (0 when it cannot be made:
/// loading will then say why).
fn plan_bytes(args: &Args, path: &Path) -> u64 {
    let (Ok(mp), Ok(ep)) = (args.model_params(), args.engine_params()) else { return 0 };
    llama_rs::MemoryPlan::estimate(path, mp, &ep.context_params()).map_or(0, |p| p.total())
}

/// The served models' ids and paths: each `-m` (the first under `--alias` if given), then
/// the GGUFs in `--models-dir` (split models by their first shard); with neither, the
/// default chat model.
pub fn served_models(args: &Args) -> Result<Vec<(String, PathBuf)>, String> {
    let stem = |p: &Path| {
        let name = p.file_name().map(|f| f.to_string_lossy().to_string()).unwrap_or_default();
        let name = name.trim_end_matches(".gguf");
        split_first_shard(name).unwrap_or(name).to_string()
    };
    let mut out: Vec<(String, PathBuf)> = args.model.iter().map(|p| (stem(p), p.clone())).collect();
    if let Some(dir) = &args.models_dir {
        let rd = std::fs::read_dir(dir).map_err(|e| format!("--models-dir {}: {e}", dir.display()))?;
        let mut found: Vec<PathBuf> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                let name = p.file_name().map(|f| f.to_string_lossy().to_string()).unwrap_or_default();
                let base = name.trim_end_matches(".gguf");
                // Shards after the first, and vision projectors, are not models of their own.
                name.ends_with(".gguf")
                    && p.is_file()
                    && (!base.contains("-of-") || split_first_shard(base).is_some())
                    && !name.starts_with("mmproj")
            })
            .collect();
        found.sort();
        if found.is_empty() && out.is_empty() {
            return Err(format!("--models-dir {}: no .gguf files", dir.display()));
        }
        out.extend(found.into_iter().map(|p| (stem(&p), p)));
    }
    if out.is_empty() {
        out.push((stem(Path::new(DEFAULT_CHAT_MODEL)), model_path(args)?));
    }
    if let (Some(a), Some(first)) = (&args.alias, out.first_mut()) {
        first.0 = a.clone();
    }
    let mut seen = std::collections::HashSet::new();
    for (id, p) in &out {
        if !seen.insert(id.clone()) {
            return Err(format!("two models would be served as {id:?} (the second: {})", p.display()));
        }
    }
    Ok(out)
}

/// `name` without `-00001-of-0000N` when it is the first shard of a split model.
fn split_first_shard(name: &str) -> Option<&str> {
    let (base, tail) = name.rsplit_once("-00001-of-")?;
    (tail.len() == 5 && tail.bytes().all(|b| b.is_ascii_digit())).then_some(base)
}

/// The default model's path: `-m`, else `$LLAMA_RS_CHAT_MODEL`, else the fetched default
/// chat model.
pub fn model_path(args: &Args) -> Result<PathBuf, String> {
    if let Some(m) = args.model.first() {
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

/// Loads the default model, its template and the engine.
pub fn load(args: &Args) -> Result<Loaded, String> {
    let (id, path) = served_models(args)?.swap_remove(0);
    load_model(args, &path, &id, true)
}

/// Loads one model, its template and its engine, with the server's flags (`default`: the
/// draft model of `--model-draft` drafts for it; it has the target's vocabulary).
pub fn load_model(args: &Args, path: &Path, id: &str, default: bool) -> Result<Loaded, String> {
    // The plan is a dry-run load: made only when a memory budget needs it.
    let memory = if args.models_memory.is_some() { plan_bytes(args, path) } else { 0 };
    let mut mp = args.model_params().map_err(|e| e.to_string())?;
    let mut ep = args.engine_params().map_err(|e| e.to_string())?;
    if args.n_gpu_layers == "auto" {
        // `-ngl auto`: as many layers as the dry-run memory plan says fit.
        let make = || args.model_params().unwrap_or_default();
        let f = llama_rs::fit(path, make, &ep.context_params(), &llama_rs::FitParams::default())
            .map_err(|e| format!("-ngl auto: {e}"))?;
        log::info!("-ngl auto: {:?} ({})", f.gpu_layers, f.reason);
        mp = f.apply(mp);
    }
    let mut speculation = speculation(args)?;
    let mtp = speculation.as_ref().is_some_and(|s| s.drafter == DraftKind::Mtp);
    // `--spec-type draft-mtp`: the model's own MTP layers are loaded (llama.cpp skips them
    // otherwise); a model without them is served without speculation.
    let model = Model::load(path, mp.mtp(mtp)).map_err(|e| format!("{}: {e}", path.display()))?;
    if mtp && !model.mtp_loaded() {
        log::warn!(
            "{}: --spec-type draft-mtp: the model has no MTP layers; served without speculation",
            path.display()
        );
        speculation = None;
    }
    if ep.n_ctx == 0 {
        ep.n_ctx = model.n_ctx_train();
    }
    if !default {
        ep.mmproj = None; // --mmproj belongs to the model of -m
    }
    let (template, template_error) = match template(args, &model) {
        Ok(t) => (Some(t), None),
        Err(e) => (None, Some(e)),
    };
    let engine = match &args.model_draft {
        None => Engine::new(&model, ep.clone()),
        Some(_) if !default => {
            speculation = None; // the draft model drafts for the default model only
            Engine::new(&model, ep.clone())
        }
        Some(d) => {
            let dp = args.draft_model_params().map_err(|e| e.to_string())?;
            let draft = Model::load(d, dp).map_err(|e| format!("--model-draft {}: {e}", d.display()))?;
            Engine::with_draft_model(&model, ep.clone(), &draft)
        }
    }
    .map_err(|e| e.to_string())?;
    let media_marker = engine.handle().media_marker();
    let h = engine.handle();
    let decode_media: MediaDecoder = Box::new(move |b: &[u8]| h.media(b));
    let created = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    Ok(Loaded {
        engine: engine.handle(),
        owner: Mutex::new(Some(engine)),
        model,
        template,
        template_error,
        id: id.to_string(),
        path: path.to_path_buf(),
        created,
        memory,
        embedder: Mutex::new(None),
        n_ctx: ep.n_ctx as usize,
        speculation,
        media_marker,
        decode_media,
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
    // The library's one check (lengths, draft size): a bad flag fails at startup, not
    // every request.
    let sp = Speculation { drafter, max_draft: args.draft_max, ..Default::default() };
    sp.check().map_err(|e| format!("--spec-type {} / --draft-max / --draft-min: {e}", args.spec_type))?;
    Ok(Some(sp))
}

fn ngram(spec_type: &str, args: &Args) -> Result<DraftKind, String> {
    Ok(match spec_type {
        "ngram" | "ngram-simple" => DraftKind::Ngram { n_min: args.draft_min, n_max: 6.max(args.draft_min) },
        "ngram-map" | "ngram-map-k" => DraftKind::NgramMap { n: 3, min_count: 1 },
        "draft-mtp" | "mtp" => DraftKind::Mtp,
        t => return Err(format!("--spec-type {t}: expected none, ngram, ngram-map, draft or draft-mtp")),
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

/// Responses kept for `previous_response_id`: at most this many...
pub const MAX_STORED: usize = 1024;
/// ...and at most this many bytes of message text in all (oldest dropped first).
pub const MAX_STORED_BYTES: usize = 256 << 20;

type Conversation = Vec<llama_protocol::openai::WireMessage>;

/// The conversations of `/v1/responses` answers by response id, for
/// `previous_response_id` (the last `MAX_STORED` within `MAX_STORED_BYTES`, oldest
/// dropped first).
#[derive(Default)]
pub struct ResponseStore {
    items: Mutex<Stored>,
}

/// Response id, conversation, its bytes (oldest first); and the sum of the bytes.
type Stored = (std::collections::VecDeque<(String, Conversation, usize)>, usize);

fn conversation_bytes(c: &Conversation) -> usize {
    c.iter().map(|m| m.content.as_ref().map_or(0, |v| v.to_string().len()) + 64).sum()
}

impl ResponseStore {
    /// The stored conversation of response `id`.
    pub fn get(&self, id: &str) -> Option<Conversation> {
        let items = self.items.lock().unwrap_or_else(|p| p.into_inner());
        items.0.iter().find(|(k, _, _)| k == id).map(|(_, v, _)| v.clone())
    }

    /// Keeps `conversation` as response `id`'s (a conversation over the byte bound is not kept).
    pub fn put(&self, id: String, conversation: Conversation) {
        let n = conversation_bytes(&conversation);
        if n > MAX_STORED_BYTES {
            return;
        }
        let mut items = self.items.lock().unwrap_or_else(|p| p.into_inner());
        while items.0.len() >= MAX_STORED || items.1 + n > MAX_STORED_BYTES {
            match items.0.pop_front() {
                Some((_, _, b)) => items.1 -= b,
                None => break,
            }
        }
        items.0.push_back((id, conversation, n));
        items.1 += n;
    }
}
