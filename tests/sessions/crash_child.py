"""Child of ``test_crash_safety``: runs turns of one durable session until it is killed.

On start it checks that every turn already stored came back (context, answer and the
turn's variable), prints ``READY <turns>``, then prints ``TURN_DONE <n>`` (flushed) each
time ``completion()`` returns.
"""

from __future__ import annotations

import sys
from typing import Any

from session_support import Program, durable_rlm, repl, submit


def context(n: int) -> str:
    return f"context {n} " * 40


def responder(prompt: Any) -> str:
    n = int(Program.key(prompt)[1:])
    if sum(1 for m in prompt if m["role"] == "assistant") == 0:
        # A 50 KB variable that changes every turn: each checkpoint writes real data.
        return repl(f"v_{n} = {n}\nblob = 'x' * 50_000 + '{n}'")
    return submit(f"'answer {n}'")


def main(store: str, session_id: str) -> int:
    rlm = durable_rlm(responder, store, session_id)
    env = rlm.environment  # restores a session that has turns
    start = env.get_context_count() if env is not None else 0
    for i in range(start):
        ns = env.locals  # type: ignore[union-attr]
        got = (ns.get(f"v_{i}"), ns.get(f"final_answer_{i}"), ns.get(f"context_{i}"))
        if got != (i, f"answer {i}", context(i)) or ns.get("blob", "")[
            -len(str(start - 1)) :
        ] != str(start - 1):
            print(f"RESUME_BAD {i} {got!r}"[:300], flush=True)
            return 3
    print(f"READY {start}", flush=True)
    for n in range(start, start + 500):
        rlm.completion(context(n), root_prompt=f"t{n}")
        print(f"TURN_DONE {n}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
