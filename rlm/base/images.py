"""Images in prompts: how they travel, and what logs record of them.

An image rides in a chat message as an OpenAI-style content part, whatever the provider:
``{"type": "image_url", "image_url": {"url": "data:image/png;base64,..."}}`` for bytes
(a ``data:`` URL) or ``{"type": "image_url", "image_url": {"url": "https://..."}}`` for
a picture the provider fetches. ``llm_query(prompt, images=[...])`` builds such parts
(``rlm.environments.worker.images``); each client turns them into its provider's format
(``rlm.clients.vision``).

Image bytes never reach a log: ``loggable`` gives a prompt whose ``data:`` URLs are
replaced by a summary (type, size, sha256 prefix), which is what completions, events
and trajectories keep. Standard library only.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterator
from typing import Any

IMAGE_PART = "image_url"
# A part that stood for an image in a prompt kept for the logs.
SUMMARY_PART = "image_summary"


def parse_data_url(url: str) -> tuple[str, str] | None:
    """``(mime type, base64 text)`` of a ``data:<mime>;base64,<data>`` URL, else None."""
    if not url.startswith("data:"):
        return None
    head, sep, data = url[5:].partition(",")
    if not sep or not head.endswith(";base64"):
        return None
    return head[: -len(";base64")].split(";", 1)[0] or "application/octet-stream", data


def image_url_of(part: Any) -> str | None:
    """The URL of an image content part (``data:`` or http(s)), None for other parts."""
    if not isinstance(part, dict) or part.get("type") != IMAGE_PART:
        return None
    spec = part.get(IMAGE_PART)
    url = spec.get("url") if isinstance(spec, dict) else spec
    return url if isinstance(url, str) else None


def _messages(prompt: Any) -> list[Any]:
    if isinstance(prompt, dict):
        return [prompt]
    if isinstance(prompt, list):
        return prompt
    return []


def image_urls(prompt: Any) -> Iterator[str]:
    """The URL of every image part of ``prompt`` (a string has none)."""
    for message in _messages(prompt):
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            for part in content:
                url = image_url_of(part)
                if url is not None:
                    yield url


def has_images(prompt: Any) -> bool:
    return next(image_urls(prompt), None) is not None


def count_images(prompt: Any) -> int:
    return sum(1 for _ in image_urls(prompt))


def describe_url(url: str) -> str:
    """What a log says about an image: ``image/png, 48,213 bytes, sha256 1a2b3c4d5e6f``
    for inline bytes; the URL itself (cut at 200 characters) for a fetched one."""
    parsed = parse_data_url(url)
    if parsed is None:
        return url if not url.startswith("data:") and len(url) <= 200 else url[:200] + "..."
    mime, data = parsed
    try:
        raw = base64.b64decode(data, validate=False)
    except (binascii.Error, ValueError):
        return f"{mime}, undecodable base64 of {len(data):,} characters"
    digest = hashlib.sha256(raw).hexdigest()[:12]
    return f"{mime}, {len(raw):,} bytes, sha256 {digest}"


def loggable(prompt: Any) -> Any:
    """``prompt`` with each image part replaced by ``{"type": "image_summary", "image":
    <describe_url>}``; the same object when it holds no image (nothing is copied)."""
    if not has_images(prompt):
        return prompt
    if isinstance(prompt, dict):
        return _loggable_message(prompt)
    return [_loggable_message(m) for m in prompt]


def _loggable_message(message: Any) -> Any:
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, list):
        return message
    parts = []
    for part in content:
        url = image_url_of(part)
        parts.append(part if url is None else {"type": SUMMARY_PART, "image": describe_url(url)})
    return {**message, "content": parts}


def text_preview(prompt: Any) -> str:
    """The text of ``prompt``'s last message, with ``[image: ...]`` for each image part
    (never its bytes): what an event's prompt preview shows."""
    messages = _messages(prompt)
    if not messages:
        return str(prompt)
    last = messages[-1]
    content = last.get("content", "") if isinstance(last, dict) else last
    if not isinstance(content, list):
        return str(content)
    texts = []
    for part in content:
        url = image_url_of(part)
        if url is not None:
            texts.append(f"[image: {describe_url(url)}]")
        elif isinstance(part, dict):
            texts.append(str(part.get("text", "")))
        else:
            texts.append(str(part))
    return " ".join(t for t in texts if t)


__all__ = [
    "IMAGE_PART",
    "SUMMARY_PART",
    "count_images",
    "describe_url",
    "has_images",
    "image_url_of",
    "image_urls",
    "loggable",
    "parse_data_url",
    "text_preview",
]
