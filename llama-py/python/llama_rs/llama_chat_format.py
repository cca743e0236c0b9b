"""llama-cpp-python's multimodal chat handlers (`llama_cpp.llama_chat_format`), as thin
names over one implementation: llama.cpp's mtmd, behind the same Rust core the server
uses. Pass one as `Llama(..., chat_handler=Llava15ChatHandler(clip_model_path=...))`;
chat messages may then carry images as `image_url` parts (data URLs, local file paths,
`file://` or `http(s)` URLs: the caller's own process reads them).

The prompt is the model's own chat template (the GGUF's, or `chat_format`); the handler
names say which projector family a script meant, nothing more.
"""
import base64
import mimetypes
import os
import urllib.request
from typing import Any, Dict, List, Optional


class MTMDChatHandler:
    """A projector (`mmproj` GGUF) for the `Llama` it is given to."""

    def __init__(self, clip_model_path: str, verbose: bool = True, use_gpu: bool = True,
                 image_min_tokens: int = -1, image_max_tokens: int = -1, **kwargs: Any):
        if not os.path.exists(clip_model_path):
            raise ValueError(f"Clip model path does not exist: {clip_model_path}")
        self.clip_model_path = clip_model_path
        self.verbose = verbose
        self.use_gpu = use_gpu

    @staticmethod
    def _data_url(url: str) -> str:
        """An image reference made a data URL: local paths and URLs are read here, in the
        caller's process (the protocol layer itself only takes data URLs)."""
        if url.startswith("data:"):
            return url
        if url.startswith(("http://", "https://")):
            with urllib.request.urlopen(url, timeout=30) as r:  # noqa: S310 (the caller's own URL)
                data, mime = r.read(), r.headers.get_content_type()
        else:
            path = url[len("file://"):] if url.startswith("file://") else url
            with open(path, "rb") as f:
                data = f.read()
            mime = mimetypes.guess_type(path)[0] or "application/octet-stream"
        return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"

    @classmethod
    def inline_media(cls, messages: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
        """`messages` with every `image_url` part's image inlined as a data URL."""
        out = []
        for m in messages:
            content = m.get("content") if isinstance(m, dict) else None
            if isinstance(content, list):
                parts = []
                for p in content:
                    if isinstance(p, dict) and p.get("type") == "image_url":
                        ref = p.get("image_url")
                        url = ref.get("url", "") if isinstance(ref, dict) else str(ref or "")
                        p = dict(p, image_url={"url": cls._data_url(url)})
                    parts.append(p)
                m = dict(m, content=parts)
            out.append(m)
        return out


# The names llama-cpp-python ships: one implementation (mtmd reads the projector's type
# from the file).
class Llava15ChatHandler(MTMDChatHandler):
    pass


class Llava16ChatHandler(MTMDChatHandler):
    pass


class ObsidianChatHandler(MTMDChatHandler):
    pass


class MoondreamChatHandler(MTMDChatHandler):
    pass


class NanoLlavaChatHandler(MTMDChatHandler):
    pass


class Llama3VisionAlphaChatHandler(MTMDChatHandler):
    pass


Llama3VisionAlpha = Llama3VisionAlphaChatHandler


class MiniCPMv26ChatHandler(MTMDChatHandler):
    pass


class Qwen25VLChatHandler(MTMDChatHandler):
    pass


class Gemma3ChatHandler(MTMDChatHandler):
    pass


__all__ = [
    "MTMDChatHandler", "Llava15ChatHandler", "Llava16ChatHandler", "ObsidianChatHandler", "MoondreamChatHandler",
    "NanoLlavaChatHandler", "Llama3VisionAlphaChatHandler", "Llama3VisionAlpha", "MiniCPMv26ChatHandler",
    "Qwen25VLChatHandler", "Gemma3ChatHandler",
]
