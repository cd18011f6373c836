"""Images for the providers: which models take them, and each provider's format.

A prompt carries images as OpenAI-style ``image_url`` content parts (``rlm.base.images``),
which the OpenAI wire (OpenAI, Azure, OpenRouter, vLLM, the llama.cpp server, LiteLLM,
Portkey) sends as they are. ``anthropic_block`` and ``gemini_part`` give Anthropic's
``image`` block and Gemini's ``inline_data``/``file_data`` part.

``check_images`` is the guard the call pipeline runs before a call (``rlm.core.lm_call``):
a prompt with images for a model known to take none raises ``ImagesNotSupportedError``,
naming the model, before anything is sent. Whether a model takes images, first match:

1. ``vision=True``/``False`` in ``backend_kwargs`` (the client's ``kwargs``);
2. the client's own ``supports_images(model)``, when it has one (the embedded
   llama.cpp model: no);
3. the table below, by model-name prefix (provider prefixes such as ``openai/`` and
   tags such as ``:latest`` ignored).

A model the table does not know is sent its images: the provider decides.
"""

from __future__ import annotations

import base64
import mimetypes
from typing import Any

from rlm.base.errors import ImagesNotSupportedError
from rlm.base.images import count_images, image_url_of, parse_data_url

# From the providers' model pages (2025-11). Checked in order: the first prefix wins.
_NO_VISION = (
    "gpt-3.5", "gpt-4-32k", "gpt-4-0314", "gpt-4-0613", "o1-mini", "o1-preview",
    "o3-mini", "gpt-oss", "text-", "davinci", "babbage", "claude-2", "claude-instant",
    "gemini-1.0", "deepseek-chat", "deepseek-reasoner", "deepseek-r1", "deepseek-v3",
    "codestral", "smollm",
)  # fmt: skip
_NO_VISION_EXACT = frozenset({"gpt-4", "gemini-pro"})
_VISION = (
    "gpt-4o", "chatgpt-4o", "gpt-4.1", "gpt-4.5", "gpt-4-turbo", "gpt-4-vision", "gpt-5",
    "o1", "o3", "o4", "claude-3", "claude-sonnet-4", "claude-opus-4", "claude-haiku-4",
    "claude-4", "gemini-1.5", "gemini-2", "gemini-3", "gemini-pro-vision", "llava",
    "pixtral", "qwen2-vl", "qwen2.5-vl", "qwen3-vl",
)  # fmt: skip


def _bare_name(model: str) -> str:
    name = model.lower().rsplit("/", 1)[-1].split(":", 1)[0]
    if "anthropic." in name:  # Bedrock: us.anthropic.claude-...
        name = name.split("anthropic.", 1)[1]
    return name


def table_vision(model: str | None) -> bool | None:
    """Whether the table says ``model`` takes images (None: it does not know)."""
    if not model:
        return None
    name = _bare_name(model)
    if name in _NO_VISION_EXACT or name.startswith(_NO_VISION):
        return False
    if name.startswith(_VISION):
        return True
    return None


def accepts_images(client: Any, model: str | None = None) -> bool | None:
    """Whether ``client`` (calling ``model``, its own by default) takes images: True,
    False, or None when nothing says (see the module docstring)."""
    model = model or str(getattr(client, "model_name", "") or "")
    kwargs = getattr(client, "kwargs", None)
    override = kwargs.get("vision") if isinstance(kwargs, dict) else None
    if isinstance(override, bool):
        return override
    own = getattr(client, "supports_images", None)
    if callable(own):
        answer = own(model)
        if isinstance(answer, bool):
            return answer
    return table_vision(model)


def check_images(client: Any, prompt: Any) -> None:
    """Raise ``ImagesNotSupportedError`` if ``prompt`` holds images and ``client``'s
    model is known to take none. A prompt without images passes at once."""
    count = count_images(prompt)
    if not count or accepts_images(client) is not False:
        return
    model = str(getattr(client, "model_name", "") or type(client).__name__)
    why = getattr(client, "no_images_reason", "")
    raise ImagesNotSupportedError(model, count, f" ({why})" if why else "")


def anthropic_block(part: Any) -> dict[str, Any] | None:
    """Anthropic's ``image`` block for an ``image_url`` part (None: not an image part)."""
    url = image_url_of(part)
    if url is None:
        return None
    parsed = parse_data_url(url)
    if parsed is None:
        return {"type": "image", "source": {"type": "url", "url": url}}
    mime, data = parsed
    return {"type": "image", "source": {"type": "base64", "media_type": mime, "data": data}}


def gemini_part(part: Any, types: Any) -> Any:
    """A google-genai ``Part`` for an ``image_url`` part (None: not an image part): the
    bytes inline (``inline_data``), or a URL the service fetches (``file_data``)."""
    url = image_url_of(part)
    if url is None:
        return None
    parsed = parse_data_url(url)
    if parsed is None:
        mime = mimetypes.guess_type(url.split("?", 1)[0])[0] or "image/jpeg"
        return types.Part(file_data=types.FileData(file_uri=url, mime_type=mime))
    mime, data = parsed
    return types.Part(inline_data=types.Blob(mime_type=mime, data=base64.b64decode(data)))


__all__ = ["accepts_images", "anthropic_block", "check_images", "gemini_part", "table_vision"]
