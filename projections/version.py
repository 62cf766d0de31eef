"""The version of the projection code: what a task view row, a count summary and a snapshot of them mean.

Snapshots and rebuilt tables record the ``PROJECTION_VERSION`` of the code that made them. Bump it whenever what an
event does to a task changes (``eventstore.task.evolve``), or how a task is laid out as a row (``rows.py``,
``tables.py``): snapshots made by another version are then ignored (and taken again), never misread, and the task view
is due a ``taskstore rebuild``.

``code_fingerprint`` hashes that code; a test compares it with ``FINGERPRINT`` so that a change to it cannot go
unnoticed: whoever changes it bumps ``PROJECTION_VERSION`` (or, for a change that means nothing, such as a comment)
only records the new fingerprint.
"""

from __future__ import annotations

import hashlib
import inspect

# 2: the search text takes label keys in their sorted order (1 took them as given, which PostgreSQL's jsonb does not
# keep, so that an audit of such a task on PostgreSQL found a difference where there was none).
PROJECTION_VERSION = 2

FINGERPRINT = "527d08ff0c1db7ab"  # code_fingerprint() of the code PROJECTION_VERSION 2 describes


def code_fingerprint() -> str:
    """A hash of the code that decides what a projected task row holds."""
    from eventstore import task

    from . import rows, tables

    h = hashlib.sha256()
    for fn in (task.added, task.evolve, rows.row_of, rows.task_of, rows.search_text):
        h.update(inspect.getsource(fn).encode())
    for table in (tables.task_view, tables.scope_counts):
        for c in table.columns:
            h.update(f"{table.name}.{c.name}:{c.type!r}:{c.nullable}:{c.primary_key};".encode())
    return h.hexdigest()[:16]
