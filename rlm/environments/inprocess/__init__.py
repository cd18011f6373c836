"""What runs model code in this process (LocalREPL, and IPythonREPL's in_process mode).

Job: the pieces an in-process REPL needs that a worker gets from being a process of
its own: output captured per thread (``capture``), a best-effort time limit for a cell
(``deadline``), snapshots of a namespace in this process (``snapshots``), and the
in-process IPython engine (``ipython_shell``, LocalREPL with an IPython shell). The
REPL itself is the worker's REPL core (``rlm.environments.worker.repl_core``). None of
this is a security boundary.
"""
