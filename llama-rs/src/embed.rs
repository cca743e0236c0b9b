//! [`Embedder`]: sentence embeddings with pooling and normalization, many inputs per
//! decode; reranking scores for models with a ranking head.

use serde::{Deserialize, Serialize};

use crate::batch::Batch;
use crate::context::{Context, ContextParams, Pooling};
use crate::error::{Error, Result};
use crate::model::Model;
use crate::token::Token;

/// How embeddings are normalized.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Normalize {
    /// Raw values as the model produced them.
    None,
    /// Unit length (cosine similarity = dot product).
    #[default]
    L2,
    /// Divide by the largest absolute component.
    MaxAbs,
}

/// Options of an [`Embedder`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EmbedParams {
    /// `Unspecified` takes the model's own pooling (Mean if it has none).
    pub pooling: Pooling,
    /// How each embedding is normalized.
    pub normalize: Normalize,
    /// Most tokens per decode (and per input).
    pub n_batch: u32,
    /// Most inputs per decode.
    pub max_inputs: u32,
    /// Threads (0 = llama.cpp's default).
    pub n_threads: u32,
}

impl Default for EmbedParams {
    fn default() -> Self {
        EmbedParams {
            pooling: Pooling::Unspecified,
            normalize: Normalize::L2,
            n_batch: 2048,
            max_inputs: 32,
            n_threads: 0,
        }
    }
}

/// Embeds texts, packing many inputs into each decode.
///
/// ```
/// use llama_rs::{Embedder, EmbedParams, Model};
/// let model = Model::load(llama_testkit::default_model_path()?, Default::default())?;
/// let mut e = Embedder::new(&model, EmbedParams::default())?;
/// let v = e.embed(&["a cat", "a dog", "quantum chromodynamics"])?;
/// let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
/// assert_eq!(v.len(), 3);
/// assert!((dot(&v[0], &v[0]) - 1.0).abs() < 1e-4); // L2-normalized
/// # Ok::<(), llama_rs::Error>(())
/// ```
pub struct Embedder {
    ctx: Context,
    batch: Batch,
    normalize: Normalize,
    max_inputs: usize,
}

impl Embedder {
    /// An embedder over a new context sized by `p`, with a divisible batch for pooled models.
    pub fn new(model: &Model, p: EmbedParams) -> Result<Embedder> {
        if p.n_batch == 0 || p.max_inputs == 0 {
            return Err(Error::invalid("", "n_batch and max_inputs must be > 0".into()));
        }
        let pooling = match p.pooling {
            Pooling::None => {
                return Err(Error::invalid(
                    "",
                    "Embedder pools one vector per input; for per-token embeddings use a Context with embeddings(true)"
                        .into(),
                ))
            }
            Pooling::Unspecified => match model.meta(&format!("{}.pooling_type", model.architecture())).as_deref() {
                Some("1") => Pooling::Mean,
                Some("2") => Pooling::Cls,
                Some("3") => Pooling::Last,
                Some("4") => Pooling::Rank,
                _ => Pooling::Mean,
            },
            other => other,
        };
        // The whole batch in one micro-batch: non-causal (BERT-style) models need it,
        // and pooling must see each sequence whole.
        // llama.cpp's pooled graph needs the micro-batch to divide evenly among the
        // sequences: use the largest such batch.
        let n_seq = p.max_inputs.min(p.n_batch);
        let n_batch = p.n_batch - p.n_batch % n_seq;
        let params = ContextParams::default()
            .embeddings(true)
            .pooling(pooling)
            .n_ctx(n_batch.max(64).next_multiple_of(n_seq))
            .n_batch(n_batch)
            .n_ubatch(n_batch)
            .n_seq_max(n_seq)
            .kv_unified(true)
            .n_threads(p.n_threads);
        let ctx = model.context(params)?;
        let max_inputs = ctx.n_seq_max() as usize;
        Ok(Embedder { batch: Batch::new(n_batch as usize, 1)?, ctx, normalize: p.normalize, max_inputs })
    }

    /// The context's pooling.
    pub fn pooling(&self) -> Pooling {
        self.ctx.params().pooling
    }

    /// One vector per text.
    pub fn embed(&mut self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let vocab = self.ctx.model().vocab();
        let tokens: Vec<Vec<Token>> = texts.iter().map(|t| vocab.tokenize(t, true, false)).collect::<Result<_>>()?;
        self.embed_tokens(&tokens)
    }

    /// One vector per token sequence.
    pub fn embed_tokens(&mut self, inputs: &[Vec<Token>]) -> Result<Vec<Vec<f32>>> {
        let cap = self.batch.capacity();
        for t in inputs {
            if t.is_empty() {
                return Err(Error::invalid("", "empty input".into()));
            }
            if t.len() > cap {
                return Err(Error::PromptTooLong { n_prompt: t.len(), n_ctx: cap });
            }
        }
        let mut out = Vec::with_capacity(inputs.len());
        let mut i = 0;
        while i < inputs.len() {
            // Pack as many whole inputs as fit.
            self.batch.clear();
            let mut n = 0;
            while i + n < inputs.len() && n < self.max_inputs && self.batch.len() + inputs[i + n].len() <= cap {
                for (p, &t) in inputs[i + n].iter().enumerate() {
                    self.batch.add(t, p as i32, &[n as i32], true)?;
                }
                n += 1;
            }
            self.ctx.clear_memory(false);
            self.ctx.decode(&mut self.batch)?;
            for s in 0..n {
                let mut v = self.ctx.embeddings_seq(s as i32)?.to_vec();
                normalize(&mut v, self.normalize);
                out.push(v);
            }
            i += n;
        }
        self.ctx.clear_memory(false);
        Ok(out)
    }

    /// Relevance scores of `documents` for `query` (models with a ranking head, i.e.
    /// `Pooling::Rank`): the first value of each pair's pooled output (for Qwen3-style
    /// rerankers the softmax probability of "yes"). Higher is more relevant.
    pub fn rerank(&mut self, query: &str, documents: &[&str]) -> Result<Vec<f32>> {
        if self.pooling() != Pooling::Rank {
            return Err(Error::Unsupported(
                "reranking needs a model with a ranking head (pooling type rank); this model has none".into(),
            ));
        }
        let model = self.ctx.model().clone();
        let inputs: Vec<Vec<Token>> =
            documents.iter().map(|d| rerank_input(&model, query, d)).collect::<Result<_>>()?;
        let saved = self.normalize;
        self.normalize = Normalize::None;
        let r = self.embed_tokens(&inputs);
        self.normalize = saved;
        Ok(r?.into_iter().map(|v| v[0]).collect())
    }
}

/// The tokens of one (query, document) pair as llama-server's `/rerank` builds them: the
/// GGUF's `rerank` template with `{query}` and `{document}` filled in (special tokens
/// parsed), else `[BOS] query [EOS] [SEP] document [EOS]`, each special token only where
/// the vocabulary adds it.
///
/// ```
/// let path = std::env::temp_dir().join(format!("rr-doc-{}.gguf", std::process::id()));
/// llama_testkit::write_tiny_reranker(&path)?;
/// let model = llama_rs::Model::load(&path, Default::default())?;
/// let t = llama_rs::rerank_input(&model, "a", "b")?;
/// assert_eq!(t, model.vocab().tokenize("<s>query: a document: b", false, true)?);
/// # std::fs::remove_file(&path).ok();
/// # Ok::<(), llama_rs::Error>(())
/// ```
pub fn rerank_input(model: &Model, query: &str, document: &str) -> Result<Vec<Token>> {
    let vocab = model.vocab();
    if let Some(t) = model.chat_template(Some("rerank")) {
        let prompt = t.replace("{query}", query).replace("{document}", document);
        return vocab.tokenize(&prompt, false, true);
    }
    let q = vocab.tokenize(query, false, false)?;
    let d = vocab.tokenize(document, false, false)?;
    let eos = vocab.eos().or(vocab.sep());
    let mut t = Vec::with_capacity(q.len() + d.len() + 4);
    t.extend(vocab.bos().filter(|_| vocab.add_bos()));
    t.extend(q);
    t.extend(eos.filter(|_| vocab.add_eos()));
    t.extend(vocab.sep().filter(|_| vocab.add_sep()));
    t.extend(d);
    t.extend(eos.filter(|_| vocab.add_eos()));
    Ok(t)
}

fn normalize(v: &mut [f32], how: Normalize) {
    let d = match how {
        Normalize::None => return,
        Normalize::L2 => v.iter().map(|x| (*x as f64) * (*x as f64)).sum::<f64>().sqrt() as f32,
        Normalize::MaxAbs => v.iter().fold(0.0f32, |m, x| m.max(x.abs())),
    };
    if d > 0.0 {
        v.iter_mut().for_each(|x| *x /= d);
    }
}
