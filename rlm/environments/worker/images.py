"""``llm_query(prompt, images=[...])``: images made into prompt parts, where the REPL runs.

An image may be a path (``str`` or ``os.PathLike``: a local file, read here, so in a
sandbox the worker reads it and sends its bytes; a relative path resolves like
``open``'s), ``bytes``, a PIL image (saved as PNG, if PIL is what made it; PIL is
never imported here), a ``data:image/...;base64,`` URL, or an ``http(s)://`` URL that
the provider fetches itself. Bytes are checked by their first bytes (PNG, JPEG, GIF,
WEBP) and bounded by ``MAX_IMAGE_BYTES``; what goes out is an OpenAI-style
``image_url`` content part in the prompt's last user message (``rlm.base.images``), and
each client turns it into its provider's format.

A bad image raises ``ImageError`` (a ``ValueError``) in the cell, before anything is
sent. Standard library only, Python 3.9 compatible.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
from typing import Any

MAX_IMAGE_BYTES = 20 * 2**20  # per image, decoded
_MB = 2**20

# ``open``'s base folder, or a function giving it (the worker runs on Python 3.9, so
# the alias cannot be spelled ``str | Callable``: it is evaluated).
BaseDir = Any


class ImageError(ValueError):
    """An image ``llm_query`` cannot send (missing, unknown format, too large)."""


def sniff_mime(data: bytes) -> str | None:
    """The image type of ``data`` from its magic bytes: PNG, JPEG, GIF or WEBP."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def _too_large(size: int, what: str) -> ImageError:
    return ImageError(
        f"{what} is {size / _MB:.1f} MB; an image may be at most {MAX_IMAGE_BYTES / _MB:.0f} MB "
        "(shrink or crop it first)"
    )


def _from_bytes(data: bytes, what: str) -> dict[str, Any]:
    if len(data) > MAX_IMAGE_BYTES:
        raise _too_large(len(data), what)
    mime = sniff_mime(data)
    if mime is None:
        raise ImageError(
            f"{what} is not a PNG, JPEG, GIF or WEBP image (it starts with {data[:8]!r})"
        )
    encoded = base64.b64encode(data).decode("ascii")
    return _part(f"data:{mime};base64,{encoded}")


def _part(url: str) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url}}


def _from_data_url(url: str) -> dict[str, Any]:
    head, _, data = url[5:].partition(",")
    if not head.endswith(";base64"):
        raise ImageError("a data: URL image must be base64 (data:image/png;base64,...)")
    if len(data) * 3 // 4 > MAX_IMAGE_BYTES + 3:
        raise _too_large(len(data) * 3 // 4, "the data: URL image")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ImageError(f"the data: URL image is not valid base64: {exc}") from None
    return _from_bytes(raw, "the data: URL image")


def _from_path(path: Any, base_dir: BaseDir) -> dict[str, Any]:
    from rlm.environments.worker.namespace import resolve_path

    name = os.fspath(path)
    if isinstance(name, bytes):
        name = os.fsdecode(name)
    full = resolve_path(name, base_dir)
    if not os.path.isfile(full):
        raise ImageError(f"image file not found: {name!r}")
    size = os.path.getsize(full)
    if size > MAX_IMAGE_BYTES:
        raise _too_large(size, f"image file {name!r}")
    with open(full, "rb") as handle:
        data = handle.read(MAX_IMAGE_BYTES + 1)
    return _from_bytes(data, f"image file {name!r}")


def _is_pil_image(value: Any) -> bool:
    return type(value).__module__.startswith("PIL.") and callable(getattr(value, "save", None))


def _from_pil(image: Any) -> dict[str, Any]:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return _from_bytes(buffer.getvalue(), "the PIL image")


def image_part(image: Any, base_dir: BaseDir = ".") -> dict[str, Any]:
    """One image as an ``image_url`` content part (see the module docstring)."""
    if isinstance(image, (bytes, bytearray, memoryview)):
        return _from_bytes(bytes(image), f"the {type(image).__name__} image")
    if isinstance(image, str):
        if image.startswith("data:"):
            return _from_data_url(image)
        if image.startswith(("http://", "https://")):
            return _part(image)
        return _from_path(image, base_dir)
    if isinstance(image, os.PathLike):
        return _from_path(image, base_dir)
    if isinstance(image, dict) and image.get("type") == "image_url":
        spec = image.get("image_url")
        url = spec.get("url") if isinstance(spec, dict) else spec
        if isinstance(url, str):
            return image_part(url, base_dir)
    if _is_pil_image(image):
        return _from_pil(image)
    raise ImageError(
        f"cannot send a {type(image).__name__} as an image: pass a file path, bytes, a PIL "
        "image, a data: URL or an http(s) URL"
    )


def image_list(images: Any, fn: str) -> list[Any]:
    """``images`` as a list (one image alone is a list of one)."""
    if images is None:
        return []
    if isinstance(images, (list, tuple)):
        return list(images)
    if isinstance(images, (str, bytes, bytearray, memoryview, os.PathLike)) or _is_pil_image(
        images
    ):
        return [images]
    raise ImageError(f"{fn}(images=...) expects a list of images, got {type(images).__name__}")


def with_images(prompt: Any, images: Any, base_dir: BaseDir = ".") -> Any:
    """``prompt`` with ``images`` added to its last user message (a string prompt becomes
    one user message); ``prompt`` itself when there are none. Never mutates ``prompt``."""
    parts = [image_part(image, base_dir) for image in image_list(images, "llm_query")]
    if not parts:
        return prompt
    if isinstance(prompt, dict) and "role" in prompt:
        return _add_parts(prompt, parts)
    if isinstance(prompt, list) and prompt and all(isinstance(m, dict) for m in prompt):
        messages = list(prompt)
        for i in range(len(messages) - 1, -1, -1):
            if messages[i].get("role") == "user":
                messages[i] = _add_parts(messages[i], parts)
                return messages
        return [*messages, {"role": "user", "content": parts}]
    return [{"role": "user", "content": [{"type": "text", "text": str(prompt)}, *parts]}]


def _add_parts(message: dict[str, Any], parts: list[dict[str, Any]]) -> dict[str, Any]:
    content = message.get("content")
    if isinstance(content, list):
        blocks = list(content)
    elif content is None or content == "":
        blocks = []
    else:
        blocks = [{"type": "text", "text": str(content)}]
    return dict(message, content=blocks + parts)


def batch_with_images(prompts: list[Any], images: Any, base_dir: BaseDir = ".") -> list[Any]:
    """``llm_query_batched``'s prompts with their images: ``images[i]`` (a list, one
    image or None) goes with ``prompts[i]``."""
    if images is None:
        return prompts
    if not isinstance(images, (list, tuple)) or len(images) != len(prompts):
        raise ImageError(
            "llm_query_batched(prompts, images=...) expects one list of images per prompt "
            f"({len(prompts)} prompts), e.g. images=[[a], [], [b, c]]"
        )
    return [with_images(prompts[i], images[i], base_dir) for i in range(len(prompts))]


__all__ = [
    "MAX_IMAGE_BYTES",
    "ImageError",
    "batch_with_images",
    "image_list",
    "image_part",
    "sniff_mime",
    "with_images",
]
