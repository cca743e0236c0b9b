//! Model files and metadata overrides are untrusted input. llama.cpp's loader asserts
//! (aborts) on many metadata values instead of failing: a block count outside 1..=512,
//! experts without experts-used, an unknown rope scaling type, a head count of 0 (a
//! division by zero: SIGFPE), a rope dimension beyond the head size, a NaN norm epsilon,
//! vocabularies whose default special tokens fall outside the token list. And a file
//! shorter than its tensor table says is a SIGBUS once mapped. This module checks what
//! llama.cpp would assert on, from the metadata as it will be seen (file values with
//! the caller's overrides applied), before llama.cpp reads the file.

use std::collections::HashMap;
use std::path::Path;

use super::{KvOverride, ModelParams};
use crate::error::{Error, Result};
use crate::gguf::{check_gguf_header, GgufLayout, GgufValue};

/// llama.cpp's `LLAMA_MAX_LAYERS` and `LLAMA_MAX_EXPERTS` (llama-hparams.h).
const MAX_LAYERS: i64 = 512;
const MAX_EXPERTS: i64 = 1024;

fn int(v: &GgufValue) -> Option<i64> {
    Some(match v {
        GgufValue::U8(x) => *x as i64,
        GgufValue::I8(x) => *x as i64,
        GgufValue::U16(x) => *x as i64,
        GgufValue::I16(x) => *x as i64,
        GgufValue::U32(x) => *x as i64,
        GgufValue::I32(x) => *x as i64,
        GgufValue::U64(x) => i64::try_from(*x).unwrap_or(i64::MAX),
        GgufValue::I64(x) => *x,
        GgufValue::Bool(b) => *b as i64,
        _ => return None,
    })
}

fn float(v: &GgufValue) -> Option<f64> {
    match v {
        GgufValue::F32(x) => Some(*x as f64),
        GgufValue::F64(x) => Some(*x),
        other => int(other).map(|i| i as f64),
    }
}

/// The metadata as llama.cpp will see it: file values, then overrides. An override of a
/// key the file holds with another type is an error (llama.cpp ignores it with a log
/// line, silently keeping the file's value).
fn merged(
    meta: &[(String, GgufValue)],
    overrides: &[(String, KvOverride)],
    path: &Path,
) -> Result<HashMap<String, GgufValue>> {
    let mut m: HashMap<String, GgufValue> = meta.iter().cloned().collect();
    let mut seen = std::collections::HashSet::new();
    for (k, o) in overrides {
        // llama.cpp keeps the first override of a key, a merge the last: the checks
        // would see another value than the loader (found by fuzzing: block_count 0 then 5).
        if !seen.insert(k.as_str()) {
            return Err(Error::invalid("", format!("kv_override {k} is given more than once")));
        }
        let v = match o {
            KvOverride::Int(i) => GgufValue::I64(*i),
            KvOverride::Float(f) => GgufValue::F64(*f),
            KvOverride::Bool(b) => GgufValue::Bool(*b),
            KvOverride::Str(s) => GgufValue::Str(s.clone()),
        };
        if let Some(old) = m.get(k) {
            let same = match (old, o) {
                (GgufValue::Bool(_), KvOverride::Bool(_)) => true,
                (GgufValue::Str(_), KvOverride::Str(_)) => true,
                (GgufValue::F32(_) | GgufValue::F64(_), KvOverride::Float(_)) => true,
                (GgufValue::Array(_), _) => false,
                (old, KvOverride::Int(_)) => int(old).is_some() && !matches!(old, GgufValue::Bool(_)),
                _ => false,
            };
            if !same {
                return Err(Error::invalid(
                    "",
                    format!(
                        "kv_override {k}: {o:?} does not have the type of the file's value {old:?} in {} \
                     (llama.cpp would ignore it)",
                        path.display()
                    ),
                ));
            }
        }
        m.insert(k.clone(), v);
    }
    Ok(m)
}

/// Checks the metadata llama.cpp's loader asserts on. `path` is for messages.
pub(crate) fn check_metadata(
    meta: &[(String, GgufValue)],
    overrides: &[(String, KvOverride)],
    path: &Path,
) -> Result<()> {
    let m = merged(meta, overrides, path)?;
    let bad = |reason: String| Err(Error::NotGguf { path: path.into(), reason });
    let get_int = |k: &str| m.get(k).and_then(int);
    let get_first_int = |k: &str| match m.get(k) {
        Some(GgufValue::Array(a)) => a.first().and_then(int),
        Some(v) => int(v),
        None => None,
    };
    let get_max_int = |k: &str| match m.get(k) {
        Some(GgufValue::Array(a)) => a.iter().filter_map(int).max(),
        Some(v) => int(v),
        None => None,
    };

    if let Some(GgufValue::Str(arch)) = m.get("general.architecture") {
        let key = |s: &str| format!("{arch}.{s}");
        let n_layer = get_int(&key("block_count"));
        match n_layer {
            Some(n) if (1..=MAX_LAYERS).contains(&n) => {}
            Some(n) => return bad(format!("{} = {n}: must be in 1..={MAX_LAYERS}", key("block_count"))),
            None => {}
        }
        if let (Some(nextn), Some(n)) = (get_int(&key("nextn_predict_layers")), n_layer) {
            if nextn < 0 || nextn > n {
                return bad(format!("{} = {nextn} exceeds block_count {n}", key("nextn_predict_layers")));
            }
        }
        let n_expert = get_int(&key("expert_count")).unwrap_or(0);
        let n_used = get_max_int(&key("expert_used_count")).unwrap_or(0);
        let n_groups = get_int(&key("expert_group_count")).unwrap_or(0);
        let n_group_used = get_int(&key("expert_group_used_count")).unwrap_or(0);
        if !(0..=MAX_EXPERTS).contains(&n_expert) {
            return bad(format!("{} = {n_expert}: must be in 0..={MAX_EXPERTS}", key("expert_count")));
        }
        if n_expert > 0 {
            if !(1..=n_expert).contains(&n_used) {
                return bad(format!(
                    "{} = {n_used}: must be in 1..={n_expert} (expert_count)",
                    key("expert_used_count")
                ));
            }
            if n_groups < 0 || n_groups >= n_expert {
                return bad(format!(
                    "{} = {n_groups}: must be below expert_count {n_expert}",
                    key("expert_group_count")
                ));
            }
            if n_groups > 1 && (n_expert % n_groups != 0 || n_group_used <= 0 || n_group_used >= n_groups) {
                return bad(format!("expert groups {n_groups} / used {n_group_used} do not divide {n_expert} experts"));
            }
        } else if n_used != 0 || n_groups != 0 {
            return bad(format!("{} / expert_group_count set without experts", key("expert_used_count")));
        }
        let n_embd = get_int(&key("embedding_length"));
        let n_head = get_first_int(&key("attention.head_count"));
        if let Some(h) = n_head {
            if h <= 0 && n_layer.is_some() {
                // llama.cpp divides n_embd by it (SIGFPE on 0).
                return bad(format!("{} = {h}: must be > 0", key("attention.head_count")));
            }
        }
        if let Some(e) = n_embd {
            if e <= 0 || e > 1 << 20 {
                return bad(format!("{} = {e}: out of range", key("embedding_length")));
            }
        }
        let head_k = get_int(&key("attention.key_length")).or_else(|| match (n_embd, n_head) {
            (Some(e), Some(h)) if h > 0 => Some(e / h),
            _ => None,
        });
        if let (Some(rot), Some(hk)) = (get_int(&key("rope.dimension_count")), head_k) {
            if rot < 0 || rot > hk {
                return bad(format!("{} = {rot}: must be in 0..={hk} (the head size)", key("rope.dimension_count")));
            }
        }
        if let Some(v) = m.get(&key("rope.scaling.type")) {
            match v {
                GgufValue::Str(s) if ["none", "linear", "yarn", "longrope"].contains(&s.as_str()) => {}
                other => {
                    return bad(format!(
                        "{} = {other:?}: must be none, linear, yarn or longrope",
                        key("rope.scaling.type")
                    ))
                }
            }
        }
        for k in ["attention.layer_norm_rms_epsilon", "attention.layer_norm_epsilon"] {
            if let Some(e) = m.get(&key(k)).and_then(float) {
                if !e.is_finite() || e < 0.0 {
                    return bad(format!("{} = {e}: must be finite and >= 0", key(k)));
                }
            }
        }
        for k in ["context_length", "attention.head_count_kv", "feed_forward_length"] {
            if let Some(v) = get_first_int(&key(k)) {
                if v < 0 {
                    return bad(format!("{} = {v}: must be >= 0", key(k)));
                }
            }
        }
    }
    check_vocab_metadata(&m, path)
}

/// The vocabulary checks: special token ids that llama.cpp takes by default for a
/// tokenizer model must exist, and a token it must add must be defined.
fn check_vocab_metadata(m: &HashMap<String, GgufValue>, path: &Path) -> Result<()> {
    let bad = |reason: String| Err(Error::NotGguf { path: path.into(), reason });
    let Some(GgufValue::Str(model)) = m.get("tokenizer.ggml.model") else {
        return Ok(());
    };
    let n_tokens = match m.get("tokenizer.ggml.tokens") {
        Some(GgufValue::Array(a)) => a.len() as i64,
        _ => 0,
    };
    // (bos, eos, unk, sep, pad, mask) llama.cpp assumes per tokenizer model (llama-vocab.cpp).
    const NULL: i64 = -1;
    let defaults: [i64; 6] = match model.as_str() {
        "llama" => [1, 2, 0, NULL, NULL, NULL],
        "bert" => [101, NULL, 100, 102, 0, 103],
        "t5" => [NULL, 1, 2, NULL, 0, NULL],
        "plamo2" => [1, 2, 0, NULL, 3, NULL],
        "no_vocab" | "none" => {
            return bad(format!(
                "tokenizer model {model:?}: models without a vocabulary are not supported (llama.cpp asserts on \
                 every vocabulary call)"
            ))
        }
        "test" => return bad("tokenizer model \"test\" is llama.cpp's internal test tokenizer".into()),
        _ => [NULL; 6],
    };
    let names = ["bos", "eos", "unknown", "seperator", "padding", "mask"];
    let mut effective = defaults;
    for (i, name) in names.iter().enumerate() {
        if let Some(id) = m.get(&format!("tokenizer.ggml.{name}_token_id")).and_then(int) {
            // llama.cpp keeps the default when the given id is out of range.
            if (0..n_tokens).contains(&id) {
                effective[i] = id;
            }
        }
        if effective[i] != NULL && effective[i] >= n_tokens {
            return bad(format!(
                "tokenizer model {model:?} takes token {} as its {name} token, but the vocabulary has {n_tokens} tokens",
                effective[i]
            ));
        }
    }
    // Byte tokens (type 6) are decoded by token_to_byte, which aborts for every
    // tokenizer but SentencePiece, Unigram and BPE (llama-vocab.cpp).
    let byte_ok = ["llama", "t5", "gpt2", "hybriddna", "whitespace", "gemma4"].contains(&model.as_str());
    if !byte_ok {
        if let Some(GgufValue::Array(types)) = m.get("tokenizer.ggml.token_type") {
            if let Some(i) = types.iter().position(|t| int(t) == Some(6)) {
                return bad(format!("tokenizer model {model:?} cannot decode byte tokens, but token {i} is one"));
            }
        }
    }
    let flag = |k: &str| m.get(k).and_then(int).map(|v| v != 0);
    let wpm = model == "bert";
    for (key, idx, what) in [
        ("tokenizer.ggml.add_bos_token", 0, "bos"),
        ("tokenizer.ggml.add_eos_token", 1, "eos"),
        ("tokenizer.ggml.add_sep_token", 3, "sep"),
    ] {
        let needed = flag(key).unwrap_or(wpm && (idx == 0 || idx == 3));
        if needed && effective[idx] == NULL {
            return bad(format!("{key} is set but the vocabulary defines no {what} token"));
        }
    }
    Ok(())
}

/// Every tensor of the file must lie inside it: llama.cpp maps the file and reads the
/// tensors' bytes, and a short file is then a SIGBUS, not an error.
pub(crate) fn check_extent(layout: &GgufLayout, path: &Path) -> Result<()> {
    let bad = |reason: String| Err(Error::NotGguf { path: path.into(), reason });
    let n_types = llama_sys::GGML_TYPE_COUNT;
    for t in &layout.tensors {
        if t.ggml_type >= n_types {
            return bad(format!("tensor {}: unknown type {}", t.name, t.ggml_type));
        }
        // SAFETY: pure table lookups for a type id checked to be in range.
        let (blck, type_size) =
            unsafe { (llama_sys::ggml_blck_size(t.ggml_type), llama_sys::ggml_type_size(t.ggml_type)) };
        if blck <= 0 || type_size == 0 {
            return bad(format!("tensor {}: type {} is not usable (removed from ggml)", t.name, t.ggml_type));
        }
        let ne0 = t.ne.first().copied().unwrap_or(1);
        if ne0 % blck as u64 != 0 {
            return bad(format!("tensor {}: row of {ne0} not a multiple of the block size {blck}", t.name));
        }
        let rows = t.ne.iter().skip(1).try_fold(1u64, |a, &d| a.checked_mul(d));
        let bytes = rows.and_then(|r| (ne0 / blck as u64).checked_mul(type_size as u64)?.checked_mul(r));
        let end = bytes.and_then(|b| layout.data_start.checked_add(t.offset)?.checked_add(b));
        match end {
            Some(e) if e <= layout.file_len => {}
            Some(e) => {
                return bad(format!(
                    "truncated: tensor {} ends at byte {e} but the file has {} bytes",
                    t.name, layout.file_len
                ))
            }
            None => return bad(format!("tensor {}: size overflows", t.name)),
        }
    }
    Ok(())
}

/// Checks the vocabulary metadata for what makes llama.cpp abort instead of failing:
/// repeated token strings abort the load (`GGML_ASSERT(id_to_token.size() ==
/// token_to_id.size())` in llama-vocab.cpp), and a SentencePiece vocabulary without a
/// token for some byte throws `std::out_of_range` through `llama_tokenize` when byte
/// fallback needs it. Returns those bytes (empty for complete vocabularies); the
/// tokenizer refuses text containing them. Both found by the `model_load` fuzz target.
pub(crate) fn check_vocab(path: &Path, meta: &[(String, crate::GgufValue)]) -> Result<Vec<u8>> {
    let Some((_, crate::GgufValue::Array(tokens))) = meta.iter().find(|(k, _)| k == "tokenizer.ggml.tokens") else {
        return Ok(Vec::new());
    };
    let mut seen: std::collections::HashSet<std::borrow::Cow<'_, str>> =
        std::collections::HashSet::with_capacity(tokens.len());
    for (i, t) in tokens.iter().enumerate() {
        if let crate::GgufValue::Str(s) = t {
            // llama.cpp renames an empty token to "[EMPTY_<i>]", which can collide too.
            let name: std::borrow::Cow<'_, str> =
                if s.is_empty() { format!("[EMPTY_{i}]").into() } else { s.as_str().into() };
            if !seen.insert(name) {
                return Err(Error::NotGguf {
                    path: path.into(),
                    reason: format!(
                        "tokenizer.ggml.tokens repeats {s:?} (token {i}): llama.cpp cannot load such a vocabulary"
                    ),
                });
            }
        }
    }
    let spm =
        meta.iter().any(|(k, v)| k == "tokenizer.ggml.model" && matches!(v, crate::GgufValue::Str(m) if m == "llama"));
    if !spm {
        return Ok(Vec::new());
    }
    // llama_vocab::byte_to_token: "<0xAB>", else the byte itself as a one-byte token.
    let has = |b: u8| {
        seen.contains(format!("<0x{b:02X}>").as_str()) || std::str::from_utf8(&[b]).is_ok_and(|s| seen.contains(s))
    };
    Ok((0..=255u8).filter(|&b| !has(b)).collect())
}

/// Everything checked before llama.cpp opens a model file (the first of a split model):
/// header, metadata with the overrides applied, vocabulary, tensors inside the file.
/// Returns the bytes the vocabulary cannot tokenize.
pub(super) fn check_model_file(path: &Path, params: &ModelParams) -> Result<Vec<u8>> {
    let layout = crate::gguf::read_layout(path, true)?;
    check_metadata(&layout.meta, &params.kv_overrides, path)?;
    check_extent(&layout, path)?;
    check_vocab(path, &layout.meta)
}

/// An explicit split list must be the parts of one model, in order: each file's
/// `split.no` is its index and `split.count` the list's length.
pub(super) fn check_splits<P: AsRef<Path>>(paths: &[P]) -> Result<()> {
    if paths.len() == 1 {
        return Ok(());
    }
    // Missing or non-GGUF parts first: those errors name the file.
    for p in paths {
        check_gguf_header(p.as_ref())?;
    }
    for (i, p) in paths.iter().enumerate() {
        let p = p.as_ref();
        let layout = crate::gguf::read_layout(p, true)?;
        let get = |k: &str| {
            layout.meta.iter().find(|(key, _)| key == k).and_then(|(_, v)| match v {
                crate::GgufValue::U16(x) => Some(*x as u64),
                crate::GgufValue::U32(x) => Some(*x as u64),
                crate::GgufValue::I32(x) => Some(*x as u64),
                _ => None,
            })
        };
        let (no, count) = (get("split.no"), get("split.count"));
        if no != Some(i as u64) || count != Some(paths.len() as u64) {
            return Err(Error::invalid(
                "",
                format!(
                    "{} is not part {} of a {}-part split model (split.no = {no:?}, split.count = {count:?})",
                    p.display(),
                    i + 1,
                    paths.len()
                ),
            ));
        }
        check_extent(&layout, p)?;
    }
    Ok(())
}
