"""The questions the benchmark answers, in report order. One module per question, each with:

- ``KEY`` (file names, chart names), ``TITLE``, ``GOAL`` (the goal in words), ``ENGINES`` (the engines it runs on);
- a docstring whose second paragraph on describes what is compared (it goes into the report);
- ``run(ctx, engine, size) -> list[Measurement]``, using ``benchmarks.harness`` for fresh databases and timing;
- ``CHANGES_JOB = False`` when it only reads its job (it passes ``changes=CHANGES_JOB`` to ``Databases.fresh``).

To add a question: write ``benchmarks/NAME.py`` along these lines and add it to ``QUESTIONS``.
"""

from __future__ import annotations

from typing import Any

from . import append, concurrency, counts, http, lists, peers, rebuild, replay, transitions
from .harness import CLONE_UP_TO, POSTGRESQL

QUESTIONS = [append, transitions, peers, replay, concurrency, lists, counts, rebuild, http]


def in_run_order(units: list[tuple[int, Any, str]]) -> list[tuple[int, Any, str]]:
    """``(size, question, engine)`` units in the order to run them: by size, and within a size whose PostgreSQL
    template is used in place (``harness.CLONE_UP_TO``) the questions that only read the job before those that
    change it (each of which takes the template over); otherwise in ``QUESTIONS`` order."""
    sizes = list(dict.fromkeys(u[0] for u in units))
    return sorted(units, key=lambda u: (sizes.index(u[0]),
                                        u[0] > CLONE_UP_TO and u[2] == POSTGRESQL and getattr(u[1], "CHANGES_JOB", True)))
