"""The host side of a worker: what runs in this process to drive one.

Job: given a transport (``rlm.environments.transports``), run a REPL in the worker it
places with LocalREPL's behaviour and the guarantees an in-process REPL cannot give
(per-cell time limits, a crashed or stuck worker costing one cell), and answer the
worker's sub-calls.

Modules: ``worker_env`` (``WorkerEnv``, the environment every worker-based REPL is),
``client`` (the protocol over the transport's pipes), ``supervisor`` (start, replace
and restore workers, run cells with their time limits), ``recovery`` (the cell clock,
what the model is told after a restart, variable previews), ``state`` (inputs and the
snapshot kept on the host, snapshot provenance), ``tools`` (custom tools shipped to a
worker), ``subcall_relay`` (how ``llm_query``/``rlm_query`` reach the engine, and the
routing knobs of every built-in environment), ``kernel_env`` (IPythonREPL's kernel
engine) and ``ipython_common`` (what both IPythonREPL engines share).
"""
