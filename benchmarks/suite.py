"""The questions the benchmark answers, in report order. One module per question, each with:

- ``KEY`` (file names, chart names), ``TITLE``, ``GOAL`` (the goal in words), ``ENGINES`` (the engines it runs on);
- a docstring whose second paragraph on describes what is compared (it goes into the report);
- ``run(ctx, engine, size) -> list[Measurement]``, using ``benchmarks.harness`` for fresh databases and timing.

To add a question: write ``benchmarks/NAME.py`` along these lines and add it to ``QUESTIONS``.
"""

from __future__ import annotations

from . import append, concurrency, counts, http, lists, peers, rebuild, replay, transitions

QUESTIONS = [append, transitions, peers, replay, concurrency, lists, counts, rebuild, http]
