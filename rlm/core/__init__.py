"""The engine: ``RLM``, sessions and turns, the loop, sub-calls, the model-call pipeline,
the socket server, the governor, budgets and durable turns (see docs/architecture.md).

It stands on the wings (``rlm.clients``, ``rlm.environments``, ``rlm.sessions``,
``rlm.logger``) and the ground floor (``rlm.base``); nothing below imports it.
"""
