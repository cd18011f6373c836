"""Count how often one completion crosses package boundaries inside ``rlm/``.

Runs one ``RLM.completion()`` (on a fresh ``RLM``, after a warm-up run in the same
process so imports are not counted) against a scripted model whose first reply calls
``llm_query`` once and whose second reply gives the answer, in the local environment,
with a profiler (``sys.setprofile`` / ``threading.setprofile``) watching every Python
call. Each call whose caller and callee are both files under ``rlm/`` is recorded as a
(caller file, callee file) pair. The report counts distinct pairs between files, and
those whose two files sit in different packages: the top-level packages of ``rlm``
(``core``, ``clients``, ``environments``, ``base``, ...; ``environments/worker`` belongs
to ``environments``). It counts again without the calls into ``rlm/base``, the ground
floor of plain types and events that every package uses by design.

    python tools/boundary_crossings.py            # the totals
    python tools/boundary_crossings.py --pairs    # and every cross-package pair
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import threading
from collections import Counter
from types import FrameType
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parent.parent
PKG = ROOT / "rlm"


def _package(path: str) -> str:
    rel = pathlib.Path(path).relative_to(PKG)
    return rel.parts[0] if len(rel.parts) > 1 else "."


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", action="store_true", help="list the cross-package pairs")
    parser.add_argument(
        "--with-construction", action="store_true", help="also count RLM(...) itself"
    )
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))

    from rlm import RLM

    replies = [
        '```repl\nnote = llm_query("Say hi")\nprint(note)\n```',
        "hi",  # the llm_query sub-call's reply
        "FINAL(done)",
    ]
    rlm = RLM(
        backend="scripted",
        backend_kwargs={"responses": replies, "repeat_last": False},
        environment="local",
    )
    rlm.completion("warm-up", root_prompt="q")  # imports and first-call set-up are not counted

    pairs: Counter[tuple[str, str]] = Counter()
    funcs: Counter[tuple[str, str, str, str]] = Counter()
    prefix = str(PKG) + "/"

    def profile(frame: FrameType, event: str, arg: Any) -> None:
        if event != "call":
            return
        callee = frame.f_code.co_filename
        caller_frame = frame.f_back
        if caller_frame is None or not callee.startswith(prefix):
            return
        caller = caller_frame.f_code.co_filename
        if caller.startswith(prefix) and caller != callee:
            pairs[(caller, callee)] += 1
            funcs[(caller, caller_frame.f_code.co_name, callee, frame.f_code.co_name)] += 1

    fresh = RLM(
        backend="scripted",
        backend_kwargs={"responses": replies, "repeat_last": False},
        environment="local",
    )
    threading.setprofile(profile)
    sys.setprofile(profile)
    try:
        if args.with_construction:
            fresh = RLM(
                backend="scripted",
                backend_kwargs={"responses": replies, "repeat_last": False},
                environment="local",
            )
        result = fresh.completion("some context", root_prompt="q")
    finally:
        sys.setprofile(None)
        threading.setprofile(None)  # type: ignore[arg-type]
    assert result.response == "done", result.response

    files = {f for pair in pairs for f in pair}
    cross = {p: n for p, n in pairs.items() if _package(p[0]) != _package(p[1])}
    print(f"files run: {len(files)}")
    print(f"caller->callee file pairs: {len(pairs)}")
    print(f"cross-package pairs: {len(cross)}")
    fcross = [k for k in funcs if _package(k[0]) != _package(k[2])]
    above = [k for k in fcross if _package(k[2]) != "base"]
    print(f"function-level calls between files: {len(funcs)}, across packages: {len(fcross)}")
    print(f"  of which not into the ground floor (rlm/base): {len(above)}")
    if args.pairs:
        for a, fa, b, fb in sorted(fcross):
            print(
                f"  {pathlib.Path(a).relative_to(PKG)}:{fa} -> {pathlib.Path(b).relative_to(PKG)}:{fb}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
