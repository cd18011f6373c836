"""rlmx: Recursive Language Models, a drop-in engine for the ``rlm`` API.

from rlm import RLM
rlm = RLM(backend="openai", backend_kwargs={"model_name": "gpt-5-mini"})
print(rlm.completion(long_text, root_prompt="Who wrote it?").response)
"""

from rlm.base.errors import (
    BudgetExceededError,
    CancellationError,
    ErrorThresholdExceededError,
    LLMCallLimitExceededError,
    RLMError,
    RLMLimitError,
    TimeoutExceededError,
    TokenLimitExceededError,
)
from rlm.base.version import __version__ as __version__
from rlm.core.rlm import RLM

__all__ = [
    "RLM",
    "BudgetExceededError",
    "CancellationError",
    "ErrorThresholdExceededError",
    "LLMCallLimitExceededError",
    "RLMError",
    "RLMLimitError",
    "TimeoutExceededError",
    "TokenLimitExceededError",
]
