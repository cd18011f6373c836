"""The ground floor: what every other part of ``rlm`` stands on.

Standard library only, and nothing from the rest of ``rlm``: the result and usage
types (``types``), the error tree (``errors``), events and run ids (``events``), the
cancel token (``cancel``), the checkpoint a limit error carries (``checkpoint``), the
socket wire format (``wire``, ``wire_messages``, ``local_tokens``), custom-tool entries
(``tools``), secret redaction (``redact``) and the protocols that cross floors
(``ports``). ``tests/test_layers.py`` keeps it that way.
"""
