"""The handler socket's messages: ``LMRequest`` and ``LMResponse`` (``rlms`` 0.1.3 shapes,
plus the ``token`` and ``id`` rlmx adds). Re-exported by ``rlm.base.wire``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rlm.base.types import Prompt, RLMChatCompletion


@dataclass
class LMRequest:
    """One request: a single ``prompt`` or a batch of ``prompts``."""

    prompt: Prompt | None = None
    prompts: list[Prompt] | None = None
    model: str | None = None
    depth: int = 0
    token: str | None = None
    id: int | None = None
    # ``llm_query(..., schema=)``: the REPL's {"name", "schema"} (checked by the engine)
    schema: Any = None

    @property
    def is_batched(self) -> bool:
        return bool(self.prompts)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.prompt is not None:
            out["prompt"] = self.prompt
        if self.prompts is not None:
            out["prompts"] = self.prompts
        if self.model is not None:
            out["model"] = self.model
        out["depth"] = self.depth
        if self.token is not None:
            out["token"] = self.token
        if self.id is not None:
            out["id"] = self.id
        if self.schema is not None:
            out["schema"] = self.schema
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LMRequest:
        depth = data.get("depth")
        return cls(
            prompt=data.get("prompt"),
            prompts=data.get("prompts"),
            model=data.get("model"),
            depth=depth if isinstance(depth, int) else 0,
            token=data.get("token"),
            id=data.get("id"),
            schema=data.get("schema"),
        )


@dataclass
class LMResponse:
    """One response: an ``error``, a ``chat_completion`` or a list ``chat_completions``.

    In a batched response an item whose ``.error`` is set failed on its own; the
    others succeeded.
    """

    error: str | None = None
    chat_completion: RLMChatCompletion | None = None
    chat_completions: list[RLMChatCompletion] | None = None
    id: int | None = None

    @property
    def success(self) -> bool:
        return self.error is None

    @property
    def is_batched(self) -> bool:
        return self.chat_completions is not None

    def to_dict(self) -> dict[str, Any]:
        # Always the three rlms keys (unused ones None), plus our id when set.
        out: dict[str, Any] = {"error": None, "chat_completion": None, "chat_completions": None}
        if self.error is not None:
            out["error"] = self.error
        elif self.chat_completions is not None:
            out["chat_completions"] = [c.to_dict() for c in self.chat_completions]
        elif self.chat_completion is not None:
            out["chat_completion"] = self.chat_completion.to_dict()
        else:
            out["error"] = "No chat completion or error provided."
        if self.id is not None:
            out["id"] = self.id
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LMResponse:
        single = data.get("chat_completion")
        many = data.get("chat_completions")
        return cls(
            error=data.get("error"),
            chat_completion=RLMChatCompletion.from_dict(single) if single else None,
            chat_completions=(
                [RLMChatCompletion.from_dict(c) for c in many] if many is not None else None
            ),
            id=data.get("id"),
        )

    @classmethod
    def success_response(
        cls, chat_completion: RLMChatCompletion, id: int | None = None
    ) -> LMResponse:
        return cls(chat_completion=chat_completion, id=id)

    @classmethod
    def batched_success_response(
        cls, chat_completions: list[RLMChatCompletion], id: int | None = None
    ) -> LMResponse:
        return cls(chat_completions=chat_completions, id=id)

    @classmethod
    def error_response(cls, error: str, id: int | None = None) -> LMResponse:
        return cls(error=error, id=id)


__all__ = ["LMRequest", "LMResponse"]
