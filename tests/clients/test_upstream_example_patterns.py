"""The API patterns of rlms's published examples, against a real llama.cpp server.

Each test drives one pattern those examples use, written with rlmx's own calls:

* backend ``"openai"`` with no ``base_url``, reaching the server through ``OPENAI_BASE_URL``,
  and a JSONL trajectory from ``RLMLogger(log_dir=...)``;
* a provider client in ``LMHandler(client)`` serving a standalone ``LocalREPL`` given only
  ``lm_handler_address=handler.address`` (plus ``context_payload`` and ``setup_code``);
* ``custom_tools`` in the ``{"tool": ..., "description": ...}`` form, over the Portkey client;
* ``rlm_query`` / ``rlm_query_batched`` at ``max_depth=2`` and the metadata tree that
  ``RLMLogger()`` leaves on the result (``iterations -> code_blocks -> result -> rlm_calls``);
* ``compaction=True`` with a low threshold, and the ``history`` it leaves in the REPL;
* a ``BaseLM`` subclass stand-in served by ``LMHandler`` (no server needed).

SmolLM2-135M cannot write the code these runs need, so a loopback proxy in front of the
server adds a GBNF grammar that makes the real model emit a scripted reply: real tokens,
real usage numbers, deterministic text. The proxy also records what rlmx sent.
"""

from __future__ import annotations

import json
import random
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from rlm import RLM
from rlm.base.types import ModelUsageSummary, RLMChatCompletion, UsageSummary
from rlm.clients.base_lm import BaseLM
from rlm.clients.portkey import PortkeyClient
from rlm.core.lm_handler import LMHandler
from rlm.core.prompts import COMPACTION_PROMPT
from rlm.environments.local_repl import LocalREPL
from rlm.logger import RLMLogger

pytestmark = pytest.mark.timeout(120)

Messages = list[dict[str, Any]]
Script = Callable[[Messages], "str | None"]  # the reply to force, or None for a free one


def repl_block(*lines: str) -> str:
    return "```repl\n" + "\n".join(lines) + "\n```"


def user_texts(messages: Messages) -> list[str]:
    return [m["content"] for m in messages if m["role"] == "user" and isinstance(m["content"], str)]


# ---------------------------------------------------------------------------
# The scripting proxy
# ---------------------------------------------------------------------------


@dataclass
class Call:
    body: dict[str, Any]
    headers: dict[str, str]
    reply: str
    prompt_tokens: int
    completion_tokens: int
    forced: bool


@dataclass
class ScriptedProxy:
    upstream: str
    script: Script
    calls: list[Call] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.base_url = f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"
        threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True).start()

    def _forward(self, body: dict[str, Any]) -> tuple[int, bytes]:
        request = urllib.request.Request(
            f"{self.upstream}/chat/completions",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=110) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                forced = proxy.script(body["messages"])
                sent = dict(body)
                if forced is not None:
                    literal = forced.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
                    sent.update(grammar=f'root ::= "{literal}"', max_tokens=512, temperature=0)
                status, data = proxy._forward(sent)
                if status == 200:
                    reply = json.loads(data)
                    usage = reply["usage"]
                    with proxy._lock:
                        proxy.calls.append(
                            Call(
                                body,
                                {k.lower(): v for k, v in self.headers.items()},
                                reply["choices"][0]["message"]["content"],
                                usage["prompt_tokens"],
                                usage["completion_tokens"],
                                forced is not None,
                            )
                        )
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def tokens(self) -> tuple[int, int, int]:
        """(calls, prompt tokens, completion tokens) as the server counted them."""
        return (
            len(self.calls),
            sum(c.prompt_tokens for c in self.calls),
            sum(c.completion_tokens for c in self.calls),
        )


@pytest.fixture
def proxy(llama_server: Any) -> Iterator[Callable[[Script], ScriptedProxy]]:
    proxies: list[ScriptedProxy] = []

    def start(script: Script) -> ScriptedProxy:
        proxies.append(ScriptedProxy(llama_server.base_url, script))
        return proxies[-1]

    yield start
    for p in proxies:
        p.close()


def totals(usage: UsageSummary, model: str) -> tuple[int, int, int]:
    s = usage.model_usage_summaries[model]
    return s.total_calls, s.total_input_tokens, s.total_output_tokens


# ---------------------------------------------------------------------------
# Patterns
# ---------------------------------------------------------------------------


@pytest.mark.llama
def test_openai_backend_found_through_openai_base_url(
    proxy: Callable[[Script], ScriptedProxy], monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    rng = random.Random(3)
    secret = str(rng.randint(100_000_000, 999_999_999))
    lines = ["".join(rng.choices("abcdefgh ", k=60)) for _ in range(3000)]
    lines.insert(1700, f"SECRET_NUMBER={secret}")
    server = proxy(
        lambda _messages: repl_block(
            "import re",
            'found = re.search(r"SECRET_NUMBER=(\\d+)", context).group(1)',
            "print(found)",
            'answer["content"] = found',
            'answer["ready"] = True',
        )
    )
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-local")

    rlm = RLM(
        backend="openai",
        backend_kwargs={"model_name": "gpt-5-nano", "api_key": "sk-local"},
        environment="local",
        max_iterations=3,
        logger=RLMLogger(log_dir=str(tmp_path)),
    )
    result = rlm.completion("Return the digits after SECRET_NUMBER=.\n\n" + "\n".join(lines))

    assert result.response == secret
    (call,) = server.calls  # no base_url was given: only the environment led here
    assert call.body["model"] == "gpt-5-nano"
    assert call.headers["authorization"] == "Bearer sk-local"
    assert totals(result.usage_summary, "gpt-5-nano") == server.tokens()
    (log,) = tmp_path.glob("*.jsonl")
    records = [json.loads(line) for line in log.read_text().splitlines()]
    iterations = [r for r in records if r.get("type") == "iteration"]
    assert len(iterations) == 1
    assert iterations[0]["final_answer"] == secret
    assert iterations[0]["code_blocks"][0]["result"]["stdout"] == secret + "\n"


ROOT_TASK = "Delegate to children and join their answers with '|'."


@pytest.mark.llama
def test_rlm_query_and_batched_children_leave_a_metadata_tree(
    proxy: Callable[[Script], ScriptedProxy],
) -> None:
    def script(messages: Messages) -> str:
        if any(ROOT_TASK in text for text in user_texts(messages)):
            return repl_block(
                'parts = rlm_query_batched(["abc", "xyz"])',
                'parts.append(rlm_query("hello"))',
                'answer["content"] = "|".join(parts)',
                'answer["ready"] = True',
            )
        # a child: its prompt is its context
        return repl_block('answer["content"] = context[::-1]', 'answer["ready"] = True')

    server = proxy(script)
    rlm = RLM(
        backend="openai_compatible",
        backend_kwargs={"base_url": server.base_url, "model_name": "smollm2"},
        environment="local",
        max_depth=2,
        max_iterations=2,
        logger=RLMLogger(),
    )
    result = rlm.completion("unused context", root_prompt=ROOT_TASK)

    assert result.response == "cba|zyx|olleh"
    assert len(server.calls) == 4  # the root's one turn and each child's
    assert totals(result.usage_summary, "smollm2") == server.tokens()

    meta = result.metadata
    assert meta["run_metadata"]["max_depth"] == 2
    (iteration,) = meta["iterations"]
    (block,) = iteration["code_blocks"]
    sub_calls = block["result"]["rlm_calls"]
    assert [c["response"] for c in sub_calls] == ["cba", "zyx", "olleh"]
    for sub in sub_calls:
        assert sub["root_model"] == "smollm2"
        assert sub["execution_time"] >= 0
        child_iterations = sub["metadata"]["iterations"]
        assert len(child_iterations) == 1
        assert child_iterations[0]["final_answer"] == sub["response"]
        assert "run_metadata" in sub["metadata"]
    json.dumps(meta)  # the tree the examples print is plain data


@pytest.mark.llama
def test_compaction_summarises_and_keeps_history_in_the_repl(
    proxy: Callable[[Script], ScriptedProxy],
) -> None:
    def script(messages: Messages) -> str:
        if user_texts(messages)[-1] == COMPACTION_PROMPT:
            return "Step done; xs holds the numbers."
        return repl_block(  # turn 1 makes numbers; turn 2 answers from them and `history`
            "try: xs",
            "except NameError: import random; xs = random.Random(11).sample(range(999), 9)",
            'else: answer["content"] = f"{sum(xs)} {sum(type(e) is dict for e in history)}"',
            'answer["ready"] = "content" in answer and answer["content"] != ""',
        )

    server = proxy(script)
    rlm = RLM(
        backend="openai_compatible",
        backend_kwargs={"base_url": server.base_url, "model_name": "smollm2"},
        environment="local",
        max_iterations=4,
        compaction=True,
        compaction_threshold_pct=0.02,  # below the system prompt: compacts before each turn
        logger=RLMLogger(),
    )
    result = rlm.completion("Make numbers, then add them up.")

    expected_sum = sum(random.Random(11).sample(range(999), 9))
    summaries = [c for c in server.calls if user_texts(c.body["messages"])[-1] == COMPACTION_PROMPT]
    assert len(summaries) == 2 and len(server.calls) == 4
    assert result.response == f"{expected_sum} 2"
    # after a compaction the model sees the summary, not the earlier turns
    last_turn = server.calls[-1].body["messages"]
    assert {"role": "assistant", "content": "Step done; xs holds the numbers."} in last_turn
    assert not any("```repl" in m["content"] for m in last_turn if m["role"] == "assistant")


def _quote(symbol: str) -> dict[str, float]:
    return {"ACME": {"price": 12.5}, "INIT": {"price": 40.25}}.get(symbol, {})


def _holdings_value(holdings: dict[str, int]) -> float:
    return sum(_quote(s).get("price", 0.0) * n for s, n in holdings.items())


@pytest.mark.llama
def test_custom_tools_with_descriptions_over_portkey(
    proxy: Callable[[Script], ScriptedProxy],
) -> None:
    server = proxy(
        lambda _messages: repl_block(
            'v = holdings_value({"ACME": 10, "INIT": 4})',
            'answer["content"] = dollars(v) + " on " + VENUE["name"]',
            'answer["ready"] = True',
        )
    )
    rlm = RLM(
        backend="portkey",
        backend_kwargs={
            "model_name": "@openai/gpt-5-nano",
            "api_key": "sk-local",
            "base_url": server.base_url,
        },
        environment="local",
        max_iterations=2,
        custom_tools={
            "quote": {"tool": _quote, "description": "Price record of a ticker symbol"},
            "holdings_value": {
                "tool": _holdings_value,
                "description": "Total value of a {symbol: shares} mapping",
            },
            "dollars": {"tool": lambda x: f"${x:,.2f}", "description": "Formats USD"},
            "VENUE": {"tool": {"name": "XTEST"}, "description": "Where the shares trade"},
        },
    )
    result = rlm.completion("What are 10 ACME and 4 INIT shares worth?")

    assert result.response == "$286.00 on XTEST"
    system = server.calls[0].body["messages"][0]
    assert system["role"] == "system"
    for text in ("Price record of a ticker symbol", "Formats USD", "Where the shares trade"):
        assert text in system["content"]
    assert totals(result.usage_summary, "@openai/gpt-5-nano") == server.tokens()


@pytest.mark.llama
def test_handler_address_serves_a_standalone_local_repl(
    proxy: Callable[[Script], ScriptedProxy],
) -> None:
    def script(messages: Messages) -> str | None:
        return {"Add 2 and 2; digits only.": "4", "Add 3 and 3; digits only.": "6"}.get(
            user_texts(messages)[-1]
        )

    server = proxy(script)
    client = PortkeyClient(
        api_key="sk-local", model_name="@openai/gpt-5-nano", base_url=server.base_url
    )
    code = "\n".join(
        [
            'reply = llm_query("Add 2 and 2; digits only.")',
            'both = llm_query_batched(["Add 2 and 2; digits only.", "Add 3 and 3; digits only."])',
            "print(reply, type(reply).__name__, both)",
            "print(context.strip())",
            "print('pin', pin)",
        ]
    )
    with (
        LMHandler(client=client) as handler,
        LocalREPL(
            lm_handler_address=handler.address,
            context_payload="\nThe code word is heron.\n",
            setup_code='pin = "8080"\n',
        ) as repl,
    ):
        result = repl.execute_code(code)
        assert result.stderr == ""
        assert result.stdout == "4 str ['4', '6']\nThe code word is heron.\npin 8080\n"
        assert repl.locals["reply"] == "4"
        assert repl.locals["both"] == ["4", "6"]
        assert sorted(c.response for c in result.rlm_calls) == ["4", "4", "6"]
        assert all(c.root_model == "@openai/gpt-5-nano" for c in result.rlm_calls)

    assert len(server.calls) == 3 and all(c.forced for c in server.calls)
    assert {c.headers.get("x-portkey-api-key") for c in server.calls} == {"sk-local"}
    calls, tokens_in, tokens_out = server.tokens()
    usage = client.get_usage_summary().model_usage_summaries["@openai/gpt-5-nano"]
    assert (usage.total_calls, usage.total_input_tokens, usage.total_output_tokens) == (
        calls,
        tokens_in,
        tokens_out,
    )


# ---------------------------------------------------------------------------
# A BaseLM subclass behind LMHandler (the sandbox examples' stand-in); no server
# ---------------------------------------------------------------------------


class EchoLM(BaseLM):
    def __init__(self) -> None:
        super().__init__(model_name="echo")

    def completion(self, prompt: Any) -> str:
        return f"echo:{str(prompt)[:20]}"

    async def acompletion(self, prompt: Any) -> str:
        return self.completion(prompt)

    def get_usage_summary(self) -> UsageSummary:
        return UsageSummary({"echo": ModelUsageSummary(1, 10, 10)})

    def get_last_usage(self) -> UsageSummary:
        return self.get_usage_summary()


def test_base_lm_subclass_behind_handler_and_subcall_fn() -> None:
    with (
        LMHandler(client=EchoLM()) as handler,
        LocalREPL(lm_handler_address=handler.address) as repl,
    ):
        result = repl.execute_code('one = llm_query("hi")\nmany = llm_query_batched(["a", "b"])')
        assert result.stderr == ""
        assert repl.locals["one"] == "echo:hi"
        assert repl.locals["many"] == ["echo:a", "echo:b"]
        result = repl.execute_code('answer["content"] = 42\nanswer["ready"] = True')
        assert result.final_answer == "42"

    def child(prompt: str, model: str | None = None) -> RLMChatCompletion:
        return RLMChatCompletion(
            root_model=model or "child",
            prompt=prompt,
            response=f"child({prompt})",
            usage_summary=UsageSummary(model_usage_summaries={}),
            execution_time=0.0,
        )

    with LocalREPL(subcall_fn=child, custom_tools={"triple": lambda x: x * 3, "K": 7}) as repl:
        result = repl.execute_code(
            'print(triple(K), rlm_query("t"), rlm_query_batched(["a", "b"]))'
        )
        assert result.stderr == ""
        assert result.stdout == "21 child(t) ['child(a)', 'child(b)']\n"
