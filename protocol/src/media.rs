//! Media parts of chat messages, parsed once for every wire format: OpenAI's `image_url`
//! (data URLs) and `input_audio` parts, Anthropic's `image` blocks (base64 sources) and
//! Ollama's `images`. Each becomes the projector's marker in the message text and a
//! decoded [`Media`] in the prompt. Nothing is fetched and no path is opened: a request's
//! media travel inside it.

use std::sync::Arc;

use base64::Engine as _;
use llama_rs::Media;
use serde_json::Value;

use crate::error::{ProtocolError, Result};

/// How a target reads media: the marker that stands for one in a rendered prompt, and
/// the decoder (the model's projector). `None` in [`Target`](crate::job::Target): the
/// model reads no media, and a request with some is a 400 that says so.
#[derive(Clone, Copy)]
pub struct MediaReader<'a> {
    /// The projector's marker (`<__media__>`).
    pub marker: &'a str,
    /// Decodes encoded bytes (an image or audio file) with the projector.
    pub decode: &'a (dyn Fn(&[u8]) -> llama_rs::Result<Media> + Sync),
}

impl std::fmt::Debug for MediaReader<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaReader").field("marker", &self.marker).finish_non_exhaustive()
    }
}

/// Collects a request's media in prompt order.
#[derive(Debug, Default)]
pub struct MediaSink {
    /// The decoded media, in the order their markers appear.
    pub media: Vec<Arc<Media>>,
}

/// Whether a content part is a medium (of any wire format this layer reads).
pub(crate) fn is_media_part(kind: Option<&str>) -> bool {
    matches!(kind, Some("image_url" | "input_audio" | "image" | "input_image"))
}

/// Reads one media part at `field` and returns the marker to put in the text.
pub(crate) fn read_part(
    part: &Value,
    field: &str,
    reader: Option<&MediaReader<'_>>,
    sink: &mut MediaSink,
) -> Result<String> {
    let Some(reader) = reader else {
        return Err(ProtocolError::invalid(
            field,
            "this model reads no images or audio (the server was started without --mmproj)",
        ));
    };
    let kind = part.get("type").and_then(Value::as_str).unwrap_or_default();
    let b64 = match kind {
        // OpenAI: {"image_url": {"url": "data:..."}} or {"image_url": "data:..."};
        // the Responses API: {"type": "input_image", "image_url": "data:..."}.
        "image_url" | "input_image" => {
            let url = match part.get("image_url") {
                Some(Value::String(u)) => u.as_str(),
                Some(v) => v.get("url").and_then(Value::as_str).unwrap_or_default(),
                None => "",
            };
            data_url(url, field)?
        }
        // OpenAI: {"input_audio": {"data": BASE64, "format": "wav" | "mp3"}}.
        "input_audio" => part
            .get("input_audio")
            .and_then(|a| a.get("data"))
            .and_then(Value::as_str)
            .ok_or_else(|| ProtocolError::invalid(field, "input_audio needs {\"data\": base64, \"format\"}"))?,
        // Anthropic: {"source": {"type": "base64", "media_type", "data"}}.
        "image" => {
            let src = part.get("source").unwrap_or(&Value::Null);
            match src.get("type").and_then(Value::as_str) {
                Some("base64") => src
                    .get("data")
                    .and_then(Value::as_str)
                    .ok_or_else(|| ProtocolError::invalid(field, "an image source needs data"))?,
                Some("url") => return Err(remote(field)),
                _ => return Err(ProtocolError::invalid(field, "an image source must be {\"type\": \"base64\", ...}")),
            }
        }
        _ => return Err(ProtocolError::invalid(field, format!("content part of type {kind:?} is not supported"))),
    };
    let bytes = decode_base64(b64, field)?;
    let media = (reader.decode)(&bytes).map_err(|e| ProtocolError::invalid(field, e.to_string()))?;
    sink.media.push(Arc::new(media));
    Ok(reader.marker.to_string())
}

/// Ollama's `images` (base64 strings): one marker each, before the message's text.
pub(crate) fn read_images(
    images: &[String],
    field: &str,
    reader: Option<&MediaReader<'_>>,
    sink: &mut MediaSink,
) -> Result<String> {
    let mut text = String::new();
    for (k, b64) in images.iter().enumerate() {
        let part = serde_json::json!({"type": "image", "source": {"type": "base64", "data": b64}});
        text += &read_part(&part, &format!("{field}[{k}]"), reader, sink)?;
    }
    Ok(text)
}

fn remote(field: &str) -> ProtocolError {
    ProtocolError::invalid(
        field,
        "remote media are not fetched: send the image inline as a data URL (data:image/png;base64,...)",
    )
}

/// The base64 payload of a `data:` URL.
fn data_url<'v>(url: &'v str, field: &str) -> Result<&'v str> {
    if url.starts_with("http://") || url.starts_with("https://") {
        return Err(remote(field));
    }
    let Some(rest) = url.strip_prefix("data:") else {
        return Err(ProtocolError::invalid(
            field,
            "an image must be a data URL (data:image/png;base64,...); paths and other URLs are never read",
        ));
    };
    match rest.split_once(',') {
        Some((meta, data)) if meta.ends_with(";base64") => Ok(data),
        _ => Err(ProtocolError::invalid(field, "a data URL must be base64-encoded (data:<type>;base64,<data>)")),
    }
}

fn decode_base64(s: &str, field: &str) -> Result<Vec<u8>> {
    let max = llama_rs::MAX_MEDIA_BYTES / 3 * 4 + 4;
    if s.len() > max {
        return Err(ProtocolError::invalid(
            field,
            format!("a medium may have at most {} bytes", llama_rs::MAX_MEDIA_BYTES),
        ));
    }
    // Clients wrap long base64 lines; whitespace is not part of the data.
    let clean: String = s.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    use base64::engine::{general_purpose::GeneralPurpose, DecodePaddingMode, GeneralPurposeConfig};
    const B64: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    B64.decode(clean).map_err(|e| ProtocolError::invalid(field, format!("invalid base64: {e}")))
}
