"""Experiments over many training runs: sweeps, and reports that compare fusion adapters.

``mmrl sweep`` (``sweep.py``) trains and evaluates every cell of a grid of models x fusion
adapters x tasks x algorithms x seeds: ``spec.py`` reads and expands the sweep file (pydantic, no
torch), ``cell.py`` runs one cell (train, then evaluate its final checkpoint), ``executors.py``
runs cells one after another, in worker processes, or as Ray tasks.

``mmrl report`` (``report.py``) compares results across seeds, tasks and costs: ``collect.py``
reads and verifies results files, ``summary.py`` computes the ranked rows, ``render.py`` and
``plots.py`` write the table, Markdown, HTML and figures. Importing this package is cheap.
"""
