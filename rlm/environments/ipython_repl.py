"""IPythonREPL: a persistent REPL with IPython syntax, in a Jupyter kernel or in-process.

One class, rlms's keywords, two engines behind it (``kernel_mode``):

* ``"subprocess"`` (the default): ``rlm.environments.host.kernel_env.KernelREPL``, the
  rlmx worker inside a real Jupyter kernel (ipykernel + jupyter_client), with hard
  per-cell timeouts (kernel interrupt, then restart with the namespace restored from
  its snapshot);
* ``"in_process"``: ``rlm.environments.inprocess.ipython_shell.InProcessShellREPL``, an
  IPython shell in this process with its own user module, fast and **not isolated at
  all**.

Both give the one rlmx REPL semantics (``context_N``/``history_N``, the ``answer`` dict,
``FINAL_VAR``, ``SHOW_VARS``, custom tools, ``llm_query`` & co. relayed to the host) and
the same re-entry guard (``rlm.environments.host.ipython_common``). The routing knobs
(``lm_handler_address``, ``subcall_fn``...) are the engine's relay's.

Needs ``pip install 'rlmx[ipython]'``; importing this module does not.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from rlm.base.types import REPLResult
from rlm.environments.base_env import DEFAULT_MAX_CONCURRENT_SUBCALLS, NonIsolatedEnv
from rlm.environments.host.ipython_common import (
    CellLimitClock,
    ReentryGuard,
    cell_limit,
    positive_timeout,
)
from rlm.environments.host.subcall_relay import SubcallFn, SubcallRouting

if TYPE_CHECKING:
    from rlm.environments.host.kernel_env import KernelREPL
    from rlm.environments.inprocess.ipython_shell import InProcessShellREPL

KernelMode = Literal["in_process", "subprocess"]
KERNEL_MODES = ("in_process", "subprocess")
DEFAULT_STARTUP_TIMEOUT = 60.0


class IPythonREPL(SubcallRouting, NonIsolatedEnv):
    """A persistent REPL whose cells may use IPython syntax (``%magic``, ``!cmd``).

    ``kernel_mode``:

    * ``"subprocess"`` (default; rlms defaults to ``"in_process"``): cells run in a Jupyter
      kernel started for this REPL (``kernel_name``, default "python3": this interpreter's
      ipykernel; ``kernel_env``: extra environment variables, the kernel otherwise gets
      only ``PATH``, ``LANG``, ``LC_ALL`` and ``HOME``/``TMPDIR`` = its own directory). A
      cell past its limit is interrupted, and if that fails, or the kernel dies, a new
      kernel is started with the namespace restored. WorkerEnv's keywords apply
      (``interrupt_grace``, ``output_limit``, ``snapshot_limit_mb``...). The kernel runs as
      you, with your files and network: not a security boundary.
    * ``"in_process"``: cells run on the calling thread, in an IPython shell in this
      process. **Not isolated at all**: a cell can read and change anything in the host
      process (its modules, memory, files, environment, signal handlers), reach this REPL
      and its LM connection, and crash or hang the host; its time limit is best effort
      (see ``rlm.environments.inprocess.deadline``). Each instance has its own user module (a unique name in
      ``sys.modules``, removed on cleanup). Use it only for code you would run yourself.

    ``cell_timeout``: not given (or None), rlmx's policy: 120 s of the cell's own running
    time, time spent waiting for ``llm_query``/``rlm_query`` answers not counted. A
    positive number: rlms's meaning, that many seconds of wall-clock time, sub-call waits
    included. 0 (or less): no limit. It may be changed between cells (``repl.cell_timeout
    = 5``). ``wall_clock`` (rlmx only) picks the clock whatever the limit: True counts
    sub-call waits, False does not. ``startup_timeout``: seconds for the kernel to start
    (> 0; rlmx's ``start_timeout``). ``subcall_timeout``: > 0, or None; accepted for rlms
    compatibility, but sub-calls always wait for the host (their own limits and the run's
    budget bound them). Invalid values raise ``ValueError``, as in rlms.

    Re-entry is refused with a ``RuntimeError``: a cell running ``execute_code`` on its
    own REPL (in-process, e.g. through ``rlm_query.__self__``), or a ``subcall_fn`` calling
    into the REPL whose cell is waiting for it, which would otherwise hang forever.
    ``max_concurrent_subcalls`` bounds the sub-calls of the whole REPL, whichever cell or
    thread makes them. ``locals`` is a read-only view of the variables: live in-process,
    as of the last cell in a kernel.
    """

    def __init__(
        self,
        lm_handler_address: tuple[str, int] | None = None,
        context_payload: Any = None,
        setup_code: str | None = None,
        persistent: bool = False,
        depth: int = 1,
        subcall_fn: SubcallFn | None = None,
        custom_tools: dict[str, Any] | None = None,
        custom_sub_tools: dict[str, Any] | None = None,
        kernel_mode: KernelMode = "subprocess",
        cell_timeout: float | None = None,
        startup_timeout: float | None = None,
        subcall_timeout: float | None = None,
        max_concurrent_subcalls: int = DEFAULT_MAX_CONCURRENT_SUBCALLS,
        wall_clock: bool | None = None,
        **kwargs: Any,
    ) -> None:
        if kernel_mode not in KERNEL_MODES:
            raise ValueError(
                f"kernel_mode must be 'in_process' or 'subprocess', not {kernel_mode!r}"
            )
        if startup_timeout is None:
            startup_timeout = kwargs.get("start_timeout", DEFAULT_STARTUP_TIMEOUT)
        self.startup_timeout = positive_timeout("startup_timeout", startup_timeout, False)
        self.subcall_timeout = positive_timeout("subcall_timeout", subcall_timeout, True)
        limit, wall = cell_limit(cell_timeout, wall_clock)
        super().__init__(
            persistent=persistent,
            depth=depth,
            max_concurrent_subcalls=max_concurrent_subcalls,
            **kwargs,
        )
        self.kernel_mode: KernelMode = kernel_mode
        self._guard = ReentryGuard(type(self).__name__)
        self._wall_clock = wall_clock
        self._clock = CellLimitClock(wall)
        self._cell_limit = limit
        self._options: dict[str, Any] = dict(
            kwargs,
            lm_handler_address=lm_handler_address,
            persistent=persistent,
            depth=depth,
            subcall_fn=subcall_fn,
            custom_tools=custom_tools,
            custom_sub_tools=custom_sub_tools,
            max_concurrent_subcalls=max_concurrent_subcalls,
        )
        self._engine: InProcessShellREPL | KernelREPL | None = None
        self._closed = False
        self._initialize(context_payload, setup_code)

    # -- engines ----------------------------------------------------------------------

    def setup(self) -> None:
        """Start the engine of ``kernel_mode`` (called once, by the constructor)."""
        if self.kernel_mode == "in_process":
            self._setup_in_process()
        else:
            self._setup_subprocess()

    def _setup_in_process(self) -> None:
        from rlm.environments.inprocess.ipython_shell import InProcessShellREPL

        engine = InProcessShellREPL(self._guard, self._clock, self._cell_limit, **self._options)
        self._engine, self._relay = engine, engine._relay

    def _setup_subprocess(self) -> None:
        from rlm.environments.host.kernel_env import KernelREPL

        options = dict(self._options, start_timeout=self.startup_timeout)
        engine = KernelREPL(self._guard, self._clock, **options)
        self._engine, self._relay = engine, engine._relay
        engine.set_cell_limit(self._cell_limit, self._clock.wall)

    @property
    def engine(self) -> InProcessShellREPL | KernelREPL:
        if self._engine is None:
            raise RuntimeError("IPythonREPL has no engine (its setup failed)")
        return self._engine

    def __getattr__(self, name: str) -> Any:
        # Anything else is the engine's (``transport``, ``temp_dir``, ``snapshot_delta``...).
        engine = self.__dict__.get("_engine")
        if engine is None or name.startswith("__"):
            raise AttributeError(name)
        return getattr(engine, name)

    # -- cells and variables ----------------------------------------------------------

    def execute_code(self, code: str) -> REPLResult:
        return self.engine.execute_code(code)  # the engine guards re-entry itself

    def interrupt_cell(self) -> bool:
        """``SupportsInterrupt``: stop the running cell (a kernel interrupt, or an
        exception raised in the in-process cell's thread); True if one was running."""
        engine = self._engine
        return engine.interrupt_cell() if engine is not None else False

    def lookup_variable(self, name: str) -> str | None:
        self._guard.check()
        return self.engine.lookup_variable(name)

    def set_variable(self, name: str, value: Any) -> None:
        self._guard.check()
        self.engine.set_variable(name, value)

    def reset_answer(self) -> None:
        self._guard.check()
        self.engine.reset_answer()

    @property
    def locals(self) -> Mapping[str, Any]:
        """The user's variables, read-only: live in-process, as of the last cell in a
        kernel (values, or previews of what the host cannot hold)."""
        return self.engine.view_locals()

    @property
    def cell_timeout(self) -> float | None:
        """The cells' time limit in seconds (None: no limit); see the class docstring."""
        return self._cell_limit

    @cell_timeout.setter
    def cell_timeout(self, value: float | None) -> None:
        limit, wall = cell_limit(value, self._wall_clock)
        self._cell_limit, self._clock.wall = limit, wall
        if self._engine is not None:
            self._engine.set_cell_limit(limit, wall)

    # -- SupportsPersistence ------------------------------------------------------------

    def load_context(self, context_payload: Any) -> None:
        self.add_context(context_payload, 0)

    def add_context(self, context_payload: Any, context_index: int | None = None) -> int:
        self._guard.check()
        return self.engine.add_context(context_payload, context_index)

    def get_context_count(self) -> int:
        return self.engine.get_context_count()

    def add_history(
        self, message_history: list[dict[str, Any]], history_index: int | None = None
    ) -> int:
        self._guard.check()
        return self.engine.add_history(message_history, history_index)

    def get_history_count(self) -> int:
        return self.engine.get_history_count()

    def append_compaction_entry(self, entry: list[dict[str, Any]] | dict[str, Any]) -> None:
        self._guard.check()
        self.engine.append_compaction_entry(entry)

    # -- SupportsSnapshot -----------------------------------------------------------------

    def snapshot(self) -> tuple[bytes, list[str]]:
        self._guard.check()
        return self.engine.snapshot()

    def restore(self, data: bytes) -> list[str]:
        self._guard.check()
        return self.engine.restore(data)

    # -- rlms's view of the in-process shell ------------------------------------------------

    @property
    def _shell(self) -> Any:
        """The in-process ``InteractiveShell`` (None in a kernel, or once cleaned up)."""
        return getattr(self._engine, "shell", None)

    @property
    def _user_module(self) -> Any:
        """The in-process user module (None in a kernel, or once cleaned up)."""
        return getattr(self._engine, "user_module", None)

    # -- lifecycle --------------------------------------------------------------------------

    def cleanup(self) -> None:
        """Stop the engine and release its resources. Safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        if self._engine is not None:
            self._engine.cleanup()

    def __enter__(self) -> IPythonREPL:
        return self
