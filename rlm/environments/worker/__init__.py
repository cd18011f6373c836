"""What runs inside a worker process: the rlmx REPL runtime.

Job: serve one host over a byte channel (the host's side is ``rlm.environments.host``;
where the process runs is a ``rlm.environments.transports`` matter). Everything here
depends only on the standard library (Python >= 3.9), so it starts in any container:
run it as ``python -m rlm.environments.worker`` where rlmx is installed, or from the
zipapp that ``rlm.environments.transports.zipapp`` builds from this folder where it is
not. Keep it stdlib-only and free of imports from the rest of ``rlm``.

Modules: ``namespace`` (the mechanics of a REPL namespace: ``answer``, inputs, the user
view, builtins, cell tracebacks), ``repl_core`` (the one REPL: scaffold functions and
cells; ``LocalREPL`` runs it in the host process too), ``repl`` (that REPL in a worker),
``snapshot`` (deltas and restore), ``capture`` (per-cell output with a cap),
``protocol`` (frames), ``payloads`` (values sent by the host), ``host`` (sub-calls to
the host), ``server`` (request dispatch), ``boot`` (process set-up), ``lifeline`` (the
worker dies with its host) and
``kernel_agent`` (the worker inside a Jupyter kernel, for IPythonREPL; it also uses
the kernel's IPython).
"""
