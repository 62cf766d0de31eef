"""taskstore's benchmark instrument: ``python -m benchmarks [--quick] [--pg URL] [--sizes ...] [--out FILE]``.

It measures taskstore against the machine's limit (raw sqlite3 and psycopg writing and reading the same rows) and
against the ``eventsourcing`` library, side by side in one run, and writes ``benchmarks/RESULTS.md`` with a PNG
chart per question. Never used by the tests: there are no timing assertions anywhere in ``tests/``.
"""
