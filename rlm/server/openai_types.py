"""OpenAI's wire format, and only the fields this server reads or writes.

Every OpenAI field name the server uses is spelled here, once. The rlmx extensions
(``root_prompt``, ``session_id``, ``rlm_events`` in a request; ``rlm`` in a response)
are marked as such.
"""

from __future__ import annotations

from typing import Any, Literal, NotRequired, TypedDict

# -- request -------------------------------------------------------------------------


class ContentPart(TypedDict, total=False):
    type: str  # only "text" parts are accepted
    text: str


class ChatMessage(TypedDict, total=False):
    role: str
    content: str | list[ContentPart] | None
    name: str


class StreamOptions(TypedDict, total=False):
    include_usage: bool


class ChatCompletionRequest(TypedDict, total=False):
    model: str
    messages: list[ChatMessage]
    stream: bool
    stream_options: StreamOptions
    n: int
    user: str
    metadata: dict[str, str]
    # read for their types and ranges only (``translate._check_types``): a wrong one is
    # a 400 as it is from OpenAI, a right one changes nothing
    temperature: float
    top_p: float
    max_tokens: int
    max_completion_tokens: int
    presence_penalty: float
    frequency_penalty: float
    seed: int
    stop: str | list[str]
    logprobs: bool
    top_logprobs: int
    parallel_tool_calls: bool
    store: bool
    # rlmx extensions, sent with the openai client's ``extra_body``
    root_prompt: str
    session_id: str
    rlm_events: bool


# -- response ------------------------------------------------------------------------


class Usage(TypedDict):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


FinishReason = Literal["stop", "length"]


class AssistantMessage(TypedDict):
    role: Literal["assistant"]
    content: str


class Choice(TypedDict):
    index: int
    message: AssistantMessage
    finish_reason: FinishReason
    logprobs: None


class RLMInfo(TypedDict, total=False):
    """rlmx extension on a completion: which session, how long, what it cost."""

    session_id: str | None
    execution_time: float
    cost_usd: float | None
    limit: str  # set when a limit stopped the run (finish_reason "length")


class ChatCompletion(TypedDict):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    rlm: NotRequired[RLMInfo]


class ChunkDelta(TypedDict, total=False):
    role: Literal["assistant"]
    content: str


class ChunkChoice(TypedDict):
    index: int
    delta: ChunkDelta
    finish_reason: FinishReason | None
    logprobs: None


class ChatCompletionChunk(TypedDict):
    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: NotRequired[Usage | None]


class Model(TypedDict):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelList(TypedDict):
    object: Literal["list"]
    data: list[Model]


# -- errors --------------------------------------------------------------------------

ErrorType = Literal[
    "invalid_request_error", "authentication_error", "rate_limit_error", "server_error", "api_error"
]


class ErrorDetail(TypedDict):
    message: str
    type: ErrorType
    param: str | None
    code: str | None


class ErrorBody(TypedDict):
    error: ErrorDetail


JSON = dict[str, Any]
