"""Where a worker process runs and how the host reaches it: placement only.

Job: start one worker process somewhere, hand the host two byte pipes to it, and
poll, kill and clean up that process (``base.Transport``). A transport knows nothing
of the protocol spoken on the pipes (``rlm.environments.host.client``) nor of REPL
semantics (``rlm.environments.worker``).

Modules: ``base`` (the interface), ``zipapp`` (the worker packaged as one file, and
the stdin bootstrap for places where no file can be put), ``process`` (a local child
process), ``bwrap`` with ``sandbox_user`` and ``sandbox_limits`` (the bubblewrap
sandbox, the unprivileged user it starts as on a root host, its rlimits), ``docker``
(``docker run -i``), ``exec`` with ``exec_launcher`` (a provider sandbox's "exec" call,
and the launcher it runs there) and its adapters ``modal``, ``e2b``, ``daytona``,
``prime``, and ``kernel`` (a Jupyter kernel, for IPythonREPL).
"""
