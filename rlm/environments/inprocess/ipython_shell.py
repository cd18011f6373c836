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

Cells have a best-effort time limit (``rlm.environments.inprocess.deadline``) and are
interrupted when the run is stopped (``rlm.environments.inprocess.interrupt``). This
mode is **not isolated at all**: cells share the host's memory, modules, files, signals
and threads.
"""

from __future__ import annotations

import atexit
import builtins
import contextlib
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, nullcontext
from types import MappingProxyType, ModuleType
from typing import Any

from rlm.base.errors import MissingExtraError
from rlm.base.types import REPLResult
from rlm.environments.host.ipython_common import CellLimitClock, ReentryGuard
from rlm.environments.host.subcall_relay import SubcallScope
from rlm.environments.inprocess.deadline import CellDeadline, CellTimeout
from rlm.environments.local_repl import LocalREPL
from rlm.environments.worker.kernel_agent import ipython_syntax, plain_display

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
        shell = InteractiveShell(  # type: ignore[no-untyped-call]
            config=config, user_module=module, ipython_dir=ipython_dir
        )
        return shell


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

    ``guard`` refuses re-entry (its ``subcall_fn`` runs inside ``guard.subcall``),
    ``clock`` measures cells against ``cell_limit`` seconds (None: no limit); the other
    keyword arguments are LocalREPL's."""

    def __init__(
        self,
        guard: ReentryGuard,
        clock: CellLimitClock,
        cell_limit: float | None,
        **kwargs: Any,
    ) -> None:
        self._guard = guard
        self.clock = clock
        self.cell_limit = cell_limit
        self.shell: Any = None
        self.user_module: ModuleType | None = None
        self._own_timeout: type[CellTimeout] | None = None  # the running cell's deadline
        try:
            super().__init__(**kwargs)
        except BaseException:
            with contextlib.suppress(Exception):  # the original error is the one to see
                self.cleanup()
            raise

    def _subcall_scope(self) -> SubcallScope:
        return self._guard.subcall

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
        self.builtins.update(get_ipython=shell.get_ipython, display=plain_display(shell))
        self.globals = user_ns
        # A rebound input() is undone like the scaffold.
        self.set_functions({**self.scaffold, "input": self.builtins["input"]})

    # -- cells (LocalREPL's, with IPython syntax and a deadline) ------------------------

    def execute_code(self, code: str) -> REPLResult:
        with self._guard.cell():
            return super().execute_code(code)

    def _check_open(self) -> None:
        if self._closed or self.shell is None:
            raise RuntimeError("IPythonREPL has been cleaned up")

    def _run_code(self, code: str, filename: str) -> None:
        deadline = self._deadline(self._cell_count)
        self._own_timeout = deadline.timeout if deadline is not None else None
        with deadline or nullcontext():
            source = ipython_syntax(code, self.shell)
            self.sources[filename] = source  # what tracebacks show
            exec(compile(source, filename, "exec", dont_inherit=True), self.globals)

    def _ends_cell(self, exc: BaseException) -> bool:
        if isinstance(exc, CellTimeout):
            # Only this cell's own deadline; another is that of a cell running this one.
            return self._own_timeout is not None and isinstance(exc, self._own_timeout)
        return super()._ends_cell(exc)

    def _describe_error(self, exc: BaseException) -> str:
        if isinstance(exc, CellTimeout):
            return (
                f"TimeoutError: cell {self._cell_count} ran longer than the "
                f"{self.cell_limit:g} s cell_timeout and was interrupted; the namespace is "
                "intact.\n"
            )
        return super()._describe_error(exc)

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

    # -- sub-calls: the time a cell waits for them is not its own --------------------------

    def _ask(self, op: str, prompts: list[Any], model: str | None, schema: Any) -> list[str]:
        number = self._cell_count
        self.clock.enter(number)
        try:
            return super()._ask(op, prompts, model, schema)
        finally:
            self.clock.leave(number)

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
