"""The questions the benchmark answers, in report order. One module per question, each with:

- ``KEY`` (file names, chart names), ``TITLE``, ``GOAL`` (the goal in words), ``ENGINES`` (the engines it runs on);
- a docstring whose second paragraph on describes what is compared (it goes into the report);
- ``run(ctx, engine, size) -> list[Measurement]``, using ``benchmarks.harness`` for fresh databases and timing;
- ``CHANGES_JOB = False`` when it only reads its job (it passes ``changes=CHANGES_JOB`` to ``Databases.fresh``);
- ``SHARES_JOB = True`` when it only adds tasks of its own and can share the job with other writers (it passes
  ``shared=SHARES_JOB`` to ``Databases.fresh`` and tags its ids with ``Target.tag``).

To add a question: write ``benchmarks/NAME.py`` along these lines and add it to ``QUESTIONS``.
"""

from __future__ import annotations

from typing import Any

from . import append, concurrency, counts, http, lists, peers, rebuild, replay, transitions
from . import harness
from .harness import POSTGRESQL

QUESTIONS = [append, transitions, peers, replay, concurrency, lists, counts, rebuild, http]


def in_run_order(units: list[tuple[int, Any, str]]) -> list[tuple[int, Any, str]]:
    """``(size, question, engine)`` units in the order to run them: by size, and within a size whose PostgreSQL
    template is used in place (``harness.CLONE_UP_TO``) the questions that only read the job first, then those that
    change it as a whole (each takes the template over), then those that share it with other writers; otherwise in
    ``QUESTIONS`` order."""
    sizes = list(dict.fromkeys(u[0] for u in units))

    def phase(u: tuple[int, Any, str]) -> int:
        if u[0] <= harness.CLONE_UP_TO or u[2] != POSTGRESQL or not getattr(u[1], "CHANGES_JOB", True):
            return 0
        return 2 if getattr(u[1], "SHARES_JOB", False) else 1

    return sorted(units, key=lambda u: (sizes.index(u[0]), phase(u)))
