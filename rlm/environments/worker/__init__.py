"""The rlmx worker runtime: the one REPL that runs out of process.

It depends only on the standard library (Python >= 3.9), so it starts in any
container. Run it as ``python -m rlm.environments.worker`` where rlmx is installed, or
as a single zipapp file (``build_zipapp``) where it is not. The host side is
``rlm.environments.worker_client``; the wire format is in ``protocol``.

Modules: ``protocol`` (frames), ``payloads`` (values sent by the host), ``capture``
(per-cell output with a cap), ``repl`` (the namespace), ``snapshot`` (deltas and
restore), ``host`` (sub-calls to the host), ``server`` (request dispatch), ``boot``
(process set-up) and ``zipapp`` (packaging, and the stdin bootstrap; host side only).

This package must stay importable without the rest of ``rlm``: keep it stdlib-only
and free of imports from ``rlm`` outside ``rlm.environments.namespace``.
"""
