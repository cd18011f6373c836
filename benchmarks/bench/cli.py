"""rlmx vs rlms 0.1.3, measured in the same run, against the targets of issues 5, 6 and 18.

    python benchmarks/run.py                      # everything, a few minutes on 2 cores
    python benchmarks/run.py --only S1,S3 --repeats 5
    python benchmarks/run.py --only durable --rlmx-only --no-install   # D1, D1-sandbox
    python benchmarks/run.py --quick              # 1 repeat, small sizes, no LLAMA
    python benchmarks/run.py --smoke              # CI: rlmx only, S1, no venv, no network

What it does:

1. Interpreters. ``rlms==0.1.3`` + ``psutil`` go into a venv under the cache dir
   (``~/.cache/rlmx-bench/``); this repo goes, editable, into a second venv that sees
   the packages of the interpreter running this (the base one's through
   ``--system-site-packages``, a virtualenv's through a ``.pth`` file rewritten each
   run; so llama-cpp-python and the GGUF model are found) plus ``psutil``. Both are
   reused on later runs.
   ``--no-install`` never creates a venv nor calls pip: rlmx then runs on the current
   interpreter with this repo first on ``PYTHONPATH``.
2. Runs. Each scenario of the shared harness (``benchmarks/harness/rlm_bench.py``, a vendored copy) runs as ``--only Sx --repeats 1 --json`` in a subprocess of the
   matching venv, alternating packages repeat by repeat (rlms, rlmx, then rlmx, rlms,
   ...), so both see the same machine load. Scenarios the harness lacks live in
   ``benchmarks/scenarios/`` and have the harness's output shape; they run on rlmx only.
   C0 (the harness's calibration: the machine's physical floors) runs first.
3. Report. One table: scenario, metric, rlms median, rlmx median, rlmx/rlms, the
   physical floor where one applies, the issue's target and a pass/miss mark. The
   combined JSON and a Markdown copy of the table go to ``bench-out/`` (gitignored).

The numbers are never judged in the test suite; ``--smoke`` only proves this runs.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from .config import ALL_SCENARIOS, DEFAULT_CACHE, GROUPS, HARNESS_ENV_VAR, REPO
from .report import report
from .runner import harness_dir, load_harness, noise_now, run_all, selection
from .table import build_rows
from .venvs import Interp, rlms_interp, rlmx_interp


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    ap.add_argument(
        "--quick",
        action="store_true",
        help="1 repeat, S4 at 10 MB only, S5 and D1 with 10 turns, LLAMA left out",
    )
    ap.add_argument(
        "--only",
        help=f"comma list of scenarios or groups {list(GROUPS)} "
        f"(default: all). Known: {','.join(ALL_SCENARIOS)}",
    )
    ap.add_argument(
        "--repeats",
        type=int,
        default=0,
        help="fresh processes per scenario and package (default 3; 1 with --quick)",
    )
    ap.add_argument(
        "--rlmx-only", action="store_true", help="do not install or run rlms (no rlms columns)"
    )
    ap.add_argument(
        "--no-install",
        action="store_true",
        help="never create a venv or call pip: rlmx runs on this interpreter with "
        "the repo on PYTHONPATH; rlms needs an existing venv (or --rlmx-only)",
    )
    ap.add_argument("--no-calibration", action="store_true", help="skip C0 (no floor column)")
    ap.add_argument(
        "--smoke",
        action="store_true",
        help="CI smoke run: --quick --rlmx-only --no-install --no-calibration, "
        "--only S1 unless --only is given; a few seconds, no network",
    )
    ap.add_argument("--s4-sizes", help="S4 context sizes in MB (default 10,100,500)")
    ap.add_argument("--timeout", type=float, default=600, help="seconds per child process")
    ap.add_argument(
        "--cache-dir",
        type=Path,
        default=DEFAULT_CACHE,
        help=f"where the venvs live (default {DEFAULT_CACHE})",
    )
    ap.add_argument(
        "--out-dir",
        type=Path,
        default=REPO / "bench-out",
        help="where the JSON and Markdown go (default <repo>/bench-out)",
    )
    ap.add_argument(
        "--harness-dir",
        help=f"folder of rlm_bench.py (default ${HARNESS_ENV_VAR} or benchmarks/harness, the vendored copy)",
    )
    ap.add_argument("--label", default="", help="free text stored in the JSON")
    ap.add_argument(
        "--from-json",
        metavar="RUN.json",
        type=Path,
        help="print the table of a stored run (no runs); with --markdown as Markdown",
    )
    ap.add_argument("--markdown", action="store_true", help="with --from-json: Markdown output")
    args = ap.parse_args(argv)
    if args.smoke:
        args.quick = args.rlmx_only = args.no_install = args.no_calibration = True
        args.only = args.only or "S1"
    if not args.repeats:
        args.repeats = 1 if args.quick else 3
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.from_json:
        print(report(json.loads(args.from_json.read_text()), markdown=args.markdown))
        return 0
    t_start = time.perf_counter()
    harness = harness_dir(args.harness_dir).resolve()
    hb = load_harness(harness)
    names = selection(args)
    install = not args.no_install
    args.cache_dir.mkdir(parents=True, exist_ok=True)

    interps: dict[str, Interp] = {}
    try:
        interps["rlmx"] = rlmx_interp(args.cache_dir, install)
        if not args.rlmx_only:
            interps["rlms"] = rlms_interp(args.cache_dir, install)
    except RuntimeError as exc:
        sys.exit(f"[bench] {exc}")
    for it in interps.values():
        print(
            f"[bench] {it.name}: {it.version} from {it.rlm_file} (python {it.python}, "
            f"psutil {'yes' if it.psutil else 'NO: memory of REPL subprocesses not seen'})",
            file=sys.stderr,
        )

    results: dict[str, Any] = {
        "tool": "benchmarks/run.py",
        "label": args.label,
        "command": "python benchmarks/run.py "
        + shlex.join(argv if argv is not None else sys.argv[1:]),
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": hb.machine_meta(),
        "harness_version": hb.HARNESS_VERSION,
        "repeats": args.repeats,
        "quick": args.quick,
        "noise_start": noise_now(),
        "interpreters": {k: vars(v) | {"env": None} for k, v in interps.items()},
    }
    pkgs = results["packages"] = run_all(args, interps, harness, names)

    for pkg in pkgs.values():
        for sres in pkg["scenarios"].values():
            hb.summarize_scenario(sres)
        pkg["noise"] = hb.noise_summary(pkg) if pkg["scenarios"] else None
    results["noise_end"] = noise_now()
    results["total_s"] = round(time.perf_counter() - t_start, 1)
    results["table"] = build_rows(results)

    args.out_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out_json = args.out_dir / f"run-{stamp}.json"
    out_json.write_text(json.dumps(results, indent=1, default=str))
    shutil.copyfile(out_json, args.out_dir / "latest.json")
    out_md = out_json.with_suffix(".md")
    out_md.write_text(report(results, markdown=True))
    shutil.copyfile(out_md, args.out_dir / "latest.md")
    print()
    print(report(results))
    print(f"wrote {out_json} and {out_md}")
    return 0
