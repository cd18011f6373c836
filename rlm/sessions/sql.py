"""The SQL both session stores share: a turn's columns and the recursive walk from a
session's head turn back through its parents (its thread). Written with ``?``
placeholders; the PostgreSQL store's adapter turns them into ``%s``."""

_TURN_COLUMNS = (
    "id, parent_id, session_id, idx, status, root_prompt, context_hash, context_codec, "
    "context_meta, history_hash, answer, error, usage, cost, iterations, execution_time, "
    "snapshot_kind, snapshot_hash, unrestorable, checkpoint, created_at, idempotency_key"
)
_CHAIN = (
    "WITH RECURSIVE chain(id) AS (SELECT head_turn FROM sessions WHERE id = ? "
    "UNION ALL SELECT t.parent_id FROM turns t JOIN chain c ON t.id = c.id "
    "WHERE t.parent_id IS NOT NULL) "
)
_THREAD = (
    f"{_CHAIN}SELECT {_TURN_COLUMNS} FROM turns WHERE id IN (SELECT id FROM chain) ORDER BY idx, id"
)
_FIND = (
    f"{_CHAIN}SELECT {_TURN_COLUMNS} FROM turns WHERE idempotency_key = ? "
    "AND id IN (SELECT id FROM chain) ORDER BY idx DESC, id DESC LIMIT 1"
)
