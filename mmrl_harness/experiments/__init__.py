"""Experiments over many training runs: ``mmrl sweep`` (``sweep.py``) trains and evaluates every
cell of a grid of models x fusion adapters x tasks x algorithms x seeds.

``spec.py`` reads and expands the sweep file (pydantic, no torch), ``cell.py`` runs one cell
(train, then evaluate its final checkpoint), ``executors.py`` runs cells one after another, in
worker processes, or as Ray tasks. Importing this package is cheap.
"""
