"""A script written for rlms 0.1.3 (persistent=True) runs unchanged, against a real
OpenAI-compatible server (llama.cpp serving the embedded GGUF) on loopback."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

RLMS_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from rlm import RLM
    from rlm.logger import RLMLogger

    base_url, log_dir = sys.argv[1], sys.argv[2]
    logger = RLMLogger(log_dir=log_dir)
    rlm = RLM(
        backend="openai",
        backend_kwargs={"model_name": "smollm", "base_url": base_url, "api_key": "unused"},
        environment="local",
        environment_kwargs={},
        max_depth=1,
        max_iterations=2,
        logger=logger,
        verbose=False,
        persistent=True,
        sampling_args={"max_tokens": 24, "temperature": 0},
    )
    first = rlm.completion("The secret word is apple.", root_prompt="What is the secret word?")
    second = rlm.completion("The second word is pear.", root_prompt="And the second?")
    env = rlm._persistent_env
    report = {
        "types": [type(first).__name__, type(second).__name__],
        "contexts": env.get_context_count(),
        "histories": env.get_history_count(),
        "context_1": env.locals["context_1"],
        "calls": second.usage_summary.model_usage_summaries["smollm"].total_calls,
        "trajectory_iterations": len(second.metadata["iterations"]),
        "log_file": logger.log_file_path,
    }
    rlm.close()
    report["closed"] = rlm._persistent_env is None
    print(json.dumps(report))
    """
)


def test_rlms_persistent_script_runs_unchanged(llama_server, tmp_path: Path) -> None:
    script = tmp_path / "rlms_script.py"
    script.write_text(RLMS_SCRIPT)
    out = subprocess.run(
        [sys.executable, str(script), llama_server.base_url, str(tmp_path / "logs")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["types"] == ["RLMChatCompletion", "RLMChatCompletion"]
    assert report["contexts"] == 2 and report["histories"] == 2
    assert report["context_1"] == "The second word is pear."
    assert report["calls"] >= 2  # iterations, plus the final answer-now call when unanswered
    assert report["trajectory_iterations"] >= 1
    assert report["closed"] is True
    lines = Path(report["log_file"]).read_text().splitlines()
    assert json.loads(lines[0])["type"] == "metadata"
