"""IPythonREPL's ``in_process`` mode: an IPython shell in the host process.

The namespace is LocalREPL's, with the same rules (``context_N``/``history_N``, the
``answer`` dict, ``FINAL_VAR``, ``SHOW_VARS``, custom tools, ``llm_query`` & co. through
the shared relay, output captured per execution, relative ``open`` paths resolved
against the REPL's own directory), kept in a module of its own: every instance gets a
``types.ModuleType`` with a unique name, registered in ``sys.modules`` (so pickle finds
what cells define) and dropped from it on cleanup. An ``InteractiveShell`` built on that
module gives cells IPython syntax (``%magic``, ``!cmd``, ``x = !cmd``), exactly as in the
``subprocess`` mode: code that is not plain Python goes through ``transform_cell``.

Cells run as LocalREPL's do (``exec`` in the namespace, on the calling thread), not
through ``InteractiveShell.run_cell``, whose traps swap ``sys.displayhook``,
``sys.excepthook`` and the ``builtins`` module for the whole process while a cell runs.
What building a shell changes process-wide (``sys.ps1``..``ps3``, ``builtins.display``
and ``__IPYTHON__``) is put back; ``!cmd`` runs in the REPL's directory, and ``%cd``
(which would move the host's working directory) is refused.

Cells have a best-effort time limit (``cell_deadline``). This mode is **not isolated at
all**: cells share the host's memory, modules, files, signals and threads.
"""

from __future__ import annotations

import atexit
import builtins
import contextlib
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, nullcontext
from types import MappingProxyType, ModuleType
from typing import Any

from rlm.base.errors import MissingExtraError
from rlm.base.types import Prompt, REPLResult
from rlm.environments.cell_deadline import CellDeadline, CellTimeout
from rlm.environments.ipython_agent import ipython_syntax, plain_display
from rlm.environments.ipython_common import CellLimitClock, ReentryGuard
from rlm.environments.local_repl import LocalREPL
from rlm.environments.namespace import (
    CellRecord,
    UserView,
    cell_filename,
    format_cell_error,
)
from rlm.environments.output_capture import capture
from rlm.environments.subcall_relay import Outcome, SubcallFn, outcome_text

_MODULE_KEYS = frozenset({"__name__", "__doc__", "__package__", "__loader__", "__spec__"})
_SHELL_LOCK = threading.Lock()  # building a shell touches process-wide state


@contextmanager
def _process_state_kept() -> Iterator[None]:
    """Put back what ``InteractiveShell.__init__`` sets for the whole process."""
    missing = object()
    saved_sys = {name: getattr(sys, name, missing) for name in ("ps1", "ps2", "ps3")}
    table = vars(builtins)
    saved_builtins = {name: table.get(name, missing) for name in ("__IPYTHON__", "display")}
    try:
        yield
    finally:
        for name, value in saved_sys.items():
            if value is missing:
                if hasattr(sys, name):
                    delattr(sys, name)
            else:
                setattr(sys, name, value)
        for name, value in saved_builtins.items():
            if value is missing:
                table.pop(name, None)
            else:
                table[name] = value


def new_shell(module: ModuleType, ipython_dir: str) -> Any:
    """A fresh ``InteractiveShell`` (never the process singleton) whose user namespace
    is ``module``'s, with history off and its profile under ``ipython_dir``."""
    try:
        from IPython.core.interactiveshell import InteractiveShell
        from traitlets.config import Config
    except ImportError:
        raise MissingExtraError("The ipython environment", "ipython", "ipython") from None
    config = Config()
    config.HistoryAccessor.enabled = False  # no SQLite history file per instance
    with _SHELL_LOCK, _process_state_kept():
        return InteractiveShell(config=config, user_module=module, ipython_dir=ipython_dir)


def _run_commands_in(shell: Any, cwd: str) -> None:
    """``!cmd`` and ``x = !cmd`` run in ``cwd`` (no process-wide chdir), their output
    captured with the cell's; ``%cd`` & co. raise."""
    from IPython.utils.text import LSString, SList

    def system(cmd: str) -> None:
        command = shell.var_expand(cmd, depth=1)
        done = subprocess.run(
            command, shell=True, cwd=cwd, capture_output=True, text=True, check=False,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        sys.stdout.write(done.stdout)
        sys.stderr.write(done.stderr)
        shell.user_ns["_exit_code"] = done.returncode

    def getoutput(cmd: str, split: bool = True, depth: int = 0) -> Any:
        command = shell.var_expand(cmd, depth=depth + 1)
        done = subprocess.run(
            command, shell=True, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, check=False, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        output = LSString(done.stdout)
        return SList(output.splitlines()) if split else output

    shell.system = system
    shell.getoutput = getoutput
    for name in ("cd", "pushd", "popd"):  # they would chdir the whole host process
        shell.register_magic_function(_no_chdir, "line", name)


def _no_chdir(line: str = "") -> None:
    raise RuntimeError(
        "%cd is not available in an in-process IPythonREPL: it would change the working "
        "directory of the whole host process. open() and !commands already use this "
        "REPL's own directory."
    )


class InProcessShellREPL(LocalREPL):
    """The ``in_process`` engine of IPythonREPL (see the module docstring).

    ``guard`` refuses re-entry (its ``subcall_fn`` runs tracked), ``clock`` measures
    cells against ``cell_limit`` seconds (None: no limit); the other keyword arguments
    are LocalREPL's."""

    def __init__(
        self,
        guard: ReentryGuard,
        clock: CellLimitClock,
        cell_limit: float | None,
        subcall_fn: SubcallFn | None = None,
        **kwargs: Any,
    ) -> None:
        self._guard = guard
        self.clock = clock
        self.cell_limit = cell_limit
        self.shell: Any = None
        self.user_module: ModuleType | None = None
        try:
            super().__init__(subcall_fn=guard.tracked(subcall_fn), **kwargs)
        except BaseException:
            with contextlib.suppress(Exception):  # the original error is the one to see
                self.cleanup()
            raise

    def setup(self) -> None:
        """LocalREPL's namespace, moved into a fresh user module with its shell."""
        super().setup()
        namespace = self.globals
        module = ModuleType(f"rlmx_ipython_{uuid.uuid4().hex[:12]}")
        module.__doc__ = "The namespace of one in-process IPythonREPL."
        self.user_module = module
        self.shell = shell = new_shell(module, os.path.join(self.temp_dir, ".ipython"))
        user_ns = module.__dict__
        for name in [n for n in user_ns if n not in _MODULE_KEYS]:  # In, Out, _ih, exit...
            del user_ns[name]
        user_ns.update((k, v) for k, v in namespace.items() if k != "__name__")
        _run_commands_in(shell, self.temp_dir)
        # IPython syntax compiles to get_ipython() calls; display() prints as a kernel's.
        self._builtins.update(get_ipython=shell.get_ipython, display=plain_display(shell))
        self._scaffold["input"] = self._builtins["input"]  # a rebound input() is undone
        self.globals = user_ns
        self.locals = UserView(user_ns, frozenset(self._scaffold))
        self._restore()

    # -- cells -------------------------------------------------------------------------

    def execute_code(self, code: str) -> REPLResult:
        started = time.perf_counter()
        with self._guard.cell(), self._lock:
            if self._closed or self.shell is None:
                raise RuntimeError("IPythonREPL has been cleaned up")
            self._cell_count += 1
            number = self._cell_count
            filename = cell_filename(number)
            self._sources[filename] = code
            cell, outer = CellRecord(), self._cell
            self._cell = cell
            deadline = self._deadline(number)
            try:
                with capture() as (out, err):
                    try:
                        with deadline or nullcontext():
                            source = ipython_syntax(code, self.shell)
                            self._sources[filename] = source  # what tracebacks show
                            exec(compile(source, filename, "exec"), self.globals)
                    except KeyboardInterrupt:
                        raise  # the engine turns it into a CancellationError
                    except BaseException as exc:  # SystemExit too: it ends only the cell
                        if isinstance(exc, CellTimeout) and not (
                            deadline and isinstance(exc, deadline.timeout)
                        ):
                            raise  # the deadline of a cell that is running this one
                        if err.tell() and not err.getvalue().endswith("\n"):
                            err.write("\n")
                        err.write(self._describe(exc, number))
                    finally:
                        self._restore()
                        self._snapshots.namespace.record_defs(self._sources[filename], number)
            finally:
                self._cell = outer
            return REPLResult(
                stdout=out.getvalue(),
                stderr=err.getvalue(),
                locals=self.locals.copy(),
                execution_time=time.perf_counter() - started,
                rlm_calls=list(cell.calls),
                final_answer=cell.final_answer,
            )

    def set_cell_limit(self, seconds: float | None, wall: bool) -> None:
        """Limit the next cells to ``seconds`` (None: no limit), of wall-clock time if
        ``wall``, else of their own running time."""
        self.cell_limit = seconds
        self.clock.wall = wall

    def view_locals(self) -> Mapping[str, Any]:
        """The user's variables: a live, read-only view."""
        return MappingProxyType(self.locals)

    def _deadline(self, number: int) -> CellDeadline | None:
        if self.cell_limit is None:
            return None
        return CellDeadline(self.cell_limit, self.clock, number)

    def _describe(self, exc: BaseException, number: int) -> str:
        if isinstance(exc, CellTimeout):
            return (
                f"TimeoutError: cell {number} ran longer than the {self.cell_limit:g} s "
                "cell_timeout and was interrupted; the namespace is intact.\n"
            )
        return format_cell_error(exc, self._sources)

    # -- sub-calls: the time a cell waits for them is not its own --------------------------

    @staticmethod
    def _deliver(cell: CellRecord, outcomes: list[Outcome]) -> list[str]:
        # An outcome is a completion or an error text: tell them apart by the text, not
        # by the completion class (which a re-import of rlm.base.types would replace).
        cell.record([o for o in outcomes if not isinstance(o, str)])
        return [outcome_text(o) for o in outcomes]

    @contextmanager
    def _waiting(self) -> Iterator[None]:
        number = self._cell_count
        self.clock.enter(number)
        try:
            yield
        finally:
            self.clock.leave(number)

    def _subcall(self, prompt: str, model: str | None) -> Outcome:
        with self._waiting():
            return super()._subcall(prompt, model)

    def _complete(self, prompt: Prompt, model: str | None) -> Outcome:
        with self._waiting():
            return super()._complete(prompt, model)

    def _complete_many(self, prompts: list[Prompt], model: str | None) -> list[Outcome]:
        with self._waiting():
            return super()._complete_many(prompts, model)

    # -- lifecycle ---------------------------------------------------------------------

    def cleanup(self) -> None:
        """Release the shell (and IPython's ``atexit`` holds on it, stopping what
        ``%%script --bg`` started), drop the user module from ``sys.modules``, then
        LocalREPL's cleanup. Safe to call more than once."""
        shell, self.shell = self.shell, None
        if shell is not None:
            atexit.unregister(shell.atexit_operations)
            script_magics = shell.magics_manager.registry.get("ScriptMagics")
            if script_magics is not None:  # registered on first use of %%script & co.
                atexit.unregister(script_magics.kill_bg_processes)
                script_magics.kill_bg_processes()
        module, self.user_module = self.user_module, None
        if module is not None and sys.modules.get(module.__name__) is module:
            del sys.modules[module.__name__]
        if hasattr(self, "globals"):
            super().cleanup()
