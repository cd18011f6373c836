"""The public surface is a contract with code written for ``rlms``: pin it from outside."""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys

import pytest

import rlm

RLMS_MODULES = [
    "rlm",
    "rlm.core.rlm",
    "rlm.core.types",
    "rlm.core.lm_handler",
    "rlm.core.comms_utils",
    "rlm.clients",
    "rlm.clients.base_lm",
    "rlm.clients.openai",
    "rlm.clients.anthropic",
    "rlm.clients.gemini",
    "rlm.clients.azure_openai",
    "rlm.clients.portkey",
    "rlm.clients.litellm",
    "rlm.environments",
    "rlm.environments.base_env",
    "rlm.environments.local_repl",
    "rlm.logger",
    "rlm.utils.parsing",
    "rlm.utils.prompts",
    "rlm.utils.exceptions",
    "rlm.utils.rlm_utils",
    "rlm.utils.token_utils",
]

NAMES = {
    "rlm": [
        "RLM",
        "BudgetExceededError",
        "TimeoutExceededError",
        "TokenLimitExceededError",
        "ErrorThresholdExceededError",
        "CancellationError",
    ],
    "rlm.core.types": [
        "ModelUsageSummary",
        "UsageSummary",
        "REPLResult",
        "CodeBlock",
        "RLMIteration",
        "RLMChatCompletion",
        "RLMMetadata",
        "QueryMetadata",
        "ClientBackend",
        "EnvironmentType",
    ],
    "rlm.core.lm_handler": ["LMHandler"],
    "rlm.core.comms_utils": [
        "LMRequest",
        "LMResponse",
        "send_lm_request",
        "send_lm_request_batched",
        "socket_send",
        "socket_recv",
    ],
    "rlm.clients": ["get_client", "BaseLM"],
    "rlm.clients.base_lm": ["BaseLM", "DEFAULT_TIMEOUT"],
    "rlm.environments": [
        "get_environment",
        "BaseEnv",
        "IsolatedEnv",
        "NonIsolatedEnv",
        "LocalREPL",
        "SupportsPersistence",
        "SupportsCustomTools",
        "RESERVED_TOOL_NAMES",
        "ToolInfo",
        "parse_tool_entry",
        "parse_custom_tools",
        "extract_tool_value",
        "format_tools_for_prompt",
        "validate_custom_tools",
    ],
    "rlm.logger": ["RLMLogger", "VerbosePrinter"],
    "rlm.utils.parsing": [
        "find_code_blocks",
        "find_final_answer",
        "format_iteration",
        "format_execution_result",
        "convert_context_for_repl",
    ],
    "rlm.utils.prompts": [
        "RLM_SYSTEM_PROMPT",
        "USER_PROMPT",
        "build_rlm_system_prompt",
        "build_user_prompt",
    ],
    "rlm.utils.rlm_utils": ["filter_sensitive_keys"],
}


@pytest.mark.parametrize("module", RLMS_MODULES)
def test_module_imports(module: str) -> None:
    importlib.import_module(module)


@pytest.mark.parametrize("module", sorted(NAMES))
def test_names_exist(module: str) -> None:
    mod = importlib.import_module(module)
    missing = [n for n in NAMES[module] if not hasattr(mod, n)]
    assert not missing


def test_top_level_all_is_pinned_and_resolves() -> None:
    assert set(rlm.__all__) == {
        "RLM",
        "BudgetExceededError",
        "CancellationError",
        "ErrorThresholdExceededError",
        "LLMCallLimitExceededError",
        "RLMError",
        "RLMLimitError",
        "TimeoutExceededError",
        "TokenLimitExceededError",
    }
    for name in rlm.__all__:
        assert getattr(rlm, name) is not None


def test_environments_all_resolves() -> None:
    import rlm.environments as envs

    for name in envs.__all__:
        assert hasattr(envs, name), name


def test_reserved_tool_names_are_exactly_the_rlms_set() -> None:
    from rlm.environments import RESERVED_TOOL_NAMES

    assert (
        frozenset(
            {
                "llm_query",
                "llm_query_batched",
                "rlm_query",
                "rlm_query_batched",
                "SHOW_VARS",
                "answer",
                "context",
                "history",
            }
        )
        == RESERVED_TOOL_NAMES
    )


def test_rlm_constructor_accepts_every_rlms_keyword() -> None:
    params = inspect.signature(rlm.RLM.__init__).parameters
    rlms_keywords = [
        "backend",
        "backend_kwargs",
        "environment",
        "environment_kwargs",
        "depth",
        "max_depth",
        "max_iterations",
        "max_budget",
        "max_timeout",
        "max_tokens",
        "max_errors",
        "custom_system_prompt",
        "other_backends",
        "other_backend_kwargs",
        "logger",
        "verbose",
        "persistent",
        "custom_tools",
        "custom_sub_tools",
        "compaction",
        "compaction_threshold_pct",
        "max_concurrent_subcalls",
        "on_subcall_start",
        "on_subcall_complete",
        "on_iteration_start",
        "on_iteration_complete",
        "sampling_args",
        "sub_sampling_args",
        "orchestrator",
        "user_prologue",
    ]
    assert [k for k in rlms_keywords if k not in params] == []


def test_limit_errors_carry_partial_answer_and_share_a_root() -> None:
    errors = [
        rlm.BudgetExceededError(1.0, 0.5, partial_answer="p"),
        rlm.TimeoutExceededError(2.0, 1.0, partial_answer="p"),
        rlm.TokenLimitExceededError(10, 5, partial_answer="p"),
        rlm.ErrorThresholdExceededError(3, 3, partial_answer="p"),
        rlm.CancellationError(partial_answer="p"),
    ]
    for err in errors:
        assert isinstance(err, rlm.RLMLimitError)
        assert isinstance(err, rlm.RLMError)
        assert err.partial_answer == "p"


def test_base_lm_contract() -> None:
    from rlm.clients.base_lm import DEFAULT_TIMEOUT, BaseLM

    assert DEFAULT_TIMEOUT == 300.0
    assert {"completion", "acompletion", "get_usage_summary", "get_last_usage"} <= set(
        BaseLM.__abstractmethods__
    )


def test_core_import_needs_no_optional_dependency() -> None:
    """Importing the package and building an RLM works with every SDK made unimportable."""
    blocked = [
        "openai",
        "anthropic",
        "google",
        "portkey_ai",
        "litellm",
        "llama_cpp",
        "rich",
        "dotenv",
    ]
    code = (
        "import sys\n"
        f"for name in {blocked!r}:\n"
        "    sys.modules[name] = None\n"
        "import rlm, rlm.clients.openai, rlm.clients.anthropic, rlm.clients.gemini\n"
        "import rlm.clients.azure_openai, rlm.clients.portkey, rlm.clients.litellm\n"
        "import rlm.environments, rlm.logger\n"
        "r = rlm.RLM(backend='openai', backend_kwargs={'model_name': 'x'})\n"
        "try:\n"
        "    r.completion('ctx')\n"
        "except ImportError as exc:\n"
        "    print('IMPORT-ERROR', exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "pip install 'rlmx[openai]'" in out.stdout
