"""Run rlms's published test suites, unmodified, against the rlmx installed here.

    python .ci/rlms_suites.py [--workdir DIR]

Downloads the ``rlms`` sdists (0.1.0 and 0.1.3) from PyPI at run time (their code is
never committed here), copies each one's ``tests/`` folder into a scratch directory
beside our own ``.ci/rlms_compat/mock_lm.py`` (the sdists do not ship it), and runs pytest on it
with this interpreter, where ``import rlm`` is rlmx. No rlms code is importable: only
the ``tests/`` folders are extracted. Tests that rlmx deliberately does not pass are
deselected by name from ``rlms_compat/deselected.toml``, each with its reason.

Prints one table (suite, rlms's own reference numbers, rlmx's numbers) and the
deselected tests, and exits non-zero if any suite had a failure or an error.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tarfile
import tempfile
import tomllib
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
COMPAT = HERE / "rlms_compat"
IPYTHON_FILE = "tests/test_ipython_repl.py"


@dataclass(frozen=True)
class Suite:
    name: str
    version: str
    paths: tuple[str, ...]
    ignore: tuple[str, ...]
    reference: str  # rlms's own result on this suite (measured with rlms installed)


SUITES = (
    Suite("rlms 0.1.0 tests/", "0.1.0", ("tests",), (), "119 passed, 0 failed"),
    Suite(
        "rlms 0.1.3 tests/ (but IPython)",
        "0.1.3",
        ("tests",),
        (IPYTHON_FILE,),
        "190 passed, 0 failed",
    ),
    Suite("rlms 0.1.3 test_ipython_repl.py", "0.1.3", (IPYTHON_FILE,), (), "83 passed, 0 failed"),
)


@dataclass
class Outcome:
    passed: int = 0
    failed: int = 0
    errors: int = 0
    skipped: int = 0
    deselected: int = 0
    exit_code: int = 0

    def line(self) -> str:
        return (
            f"{self.passed} passed, {self.failed} failed, {self.errors} errors, "
            f"{self.skipped} skipped, {self.deselected} deselected"
        )


def fetch_tests(version: str, workdir: Path) -> Path:
    """``workdir/<version>`` holding the sdist's ``tests/`` folder and our MockLM."""
    downloads = workdir / "sdists"
    downloads.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
         "-d", str(downloads), f"rlms=={version}"],
        check=True,
    )  # fmt: skip
    archive = next(downloads.glob(f"rlms-{version}.tar.gz"))
    root = workdir / version
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    prefix = f"rlms-{version}/tests/"
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if m.name.startswith(prefix) and m.isfile()]
        for member in members:
            member.name = member.name[len(f"rlms-{version}/") :]
            tar.extract(member, root, filter="data")
    tests = root / "tests"
    (tests / "__init__.py").touch()
    shutil.copy(COMPAT / "mock_lm.py", tests / "mock_lm.py")
    return root


def run_suite(suite: Suite, root: Path, deselect: list[str]) -> Outcome:
    report = root / f"junit-{abs(hash(suite.name))}.xml"
    cmd = [
        sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--timeout", "120",
        "--rootdir", str(root), f"--junitxml={report}", *suite.paths,
    ]  # fmt: skip
    cmd += [f"--ignore={p}" for p in suite.ignore]
    cmd += [f"--deselect={t}" for t in deselect]
    print(f"\n=== {suite.name}: {' '.join(cmd[3:])}", flush=True)
    proc = subprocess.run(cmd, cwd=root)
    outcome = Outcome(exit_code=proc.returncode, deselected=len(deselect))
    if report.exists():
        for case in ET.parse(report).getroot().iter("testcase"):
            kinds = {child.tag for child in case}
            if "failure" in kinds:
                outcome.failed += 1
            elif "error" in kinds:
                outcome.errors += 1
            elif "skipped" in kinds:
                outcome.skipped += 1
            else:
                outcome.passed += 1
    return outcome


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="rlms-suites-"))
    deselected = tomllib.loads((COMPAT / "deselected.toml").read_text())
    roots = {v: fetch_tests(v, workdir) for v in sorted({s.version for s in SUITES})}
    rows: list[tuple[Suite, Outcome]] = []
    for suite in SUITES:
        wanted = [
            d["test"]
            for d in deselected.get(suite.version, [])
            if any(d["test"] == p or d["test"].startswith(p.rstrip("/") + "/") or
                   d["test"].startswith(p + "::") for p in suite.paths)
            and not any(d["test"].startswith(i) for i in suite.ignore)
        ]  # fmt: skip
        rows.append((suite, run_suite(suite, roots[suite.version], wanted)))

    print("\nrlms's published suites, unmodified, against rlmx")
    print(f"| {'suite':<34} | {'rlms itself':<22} | rlmx")
    print(f"|{'-' * 36}|{'-' * 24}|{'-' * 60}")
    for suite, outcome in rows:
        print(f"| {suite.name:<34} | {suite.reference:<22} | {outcome.line()}")
    print("\nDeselected (see docs/compatibility.md):")
    for version, entries in sorted(deselected.items()):
        for entry in entries:
            print(f"  rlms {version} {entry['test']}\n      {entry['reason']}")
    idle = [s.name for s, o in rows if not (o.passed or o.failed or o.errors)]
    if idle:  # every test skipped or none collected: nothing was checked
        print(f"\nsuites that ran no test (a missing dependency?): {', '.join(idle)}")
        return 1
    bad = [s.name for s, o in rows if o.failed or o.errors or o.exit_code not in (0,)]
    if bad:
        print(f"\nFAILED suites: {', '.join(bad)}")
        return 1
    total = sum(o.passed for _, o in rows)
    failed = sum(o.failed + o.errors for _, o in rows)
    print(f"\ncompat: {total} passed, {failed} failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
