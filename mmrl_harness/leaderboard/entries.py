"""Runs, entries and the keys that group and de-duplicate them.

A *run* is one accepted results file. An *entry* is every run of the same model, adapter
(name and options) and configuration apart from the training seed: the board ranks entries,
aggregating the primary metric over their runs (training seeds). Two runs with the same model
fingerprint, adapter, whole configuration hash and training seed are duplicates (the training
seed counts because the configuration of ``mmrl eval --checkpoint`` is the evaluation's, the
same for every training seed).

Results schema 1.2 adds ``training`` (with the training ``seed``); a 1.1 file falls back to
its config's ``seed``, or ``train.seed`` in the config of ``mmrl train``'s evaluation. Every 1.2 field is read with ``getattr``,
so files of either version work and absent fields show as "–".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmrl_harness.results_schema import EvalResults, json_digest

#: Config keys that differ between the runs of one entry (or between machines), not the recipe
#: (also inside a training run's ``config.train``).
PER_RUN_KEYS = frozenset({"seed", "output_dir", "resume", "run_name", "checkpoint"})


def training_seed(results: EvalResults) -> int | None:
    """The training seed of the run: ``training.seed`` (schema 1.2), else the config's ``seed``."""
    training = getattr(results, "training", None)
    seed = getattr(training, "seed", None) if training is not None else None
    if seed is None:
        seed = results.config.get("seed")
    train = results.config.get("train")
    if seed is None and isinstance(train, dict):  # ``mmrl train``'s end-of-run evaluation
        seed = train.get("seed")
    return seed if isinstance(seed, int) and not isinstance(seed, bool) else None


def model_identity(results: EvalResults) -> str:
    """The weights: their fingerprint when known, else their name or path."""
    model = results.provenance.model
    return model.fingerprint or f"name:{model.name_or_path}@{model.revision or ''}"


def duplicate_key(results: EvalResults) -> str:
    """Same model fingerprint + adapter (name and options) + config hash + training seed = the
    same run."""
    fusion = results.provenance.fusion
    parts = [model_identity(results), fusion.name, fusion.options, fusion.checkpoint]
    return json_digest([*parts, results.config, training_seed(results)])


def entry_key(results: EvalResults) -> str:
    """What the runs of one entry share: model, adapter, config without per-run keys, and the
    training recipe (algorithm and steps) where the file records it (schema 1.2)."""
    fusion = results.provenance.fusion
    recipe = _without_per_run(results.config)
    parts = [results.provenance.model.name_or_path, model_identity(results), fusion.name]
    training = getattr(results, "training", None)
    trained = [getattr(training, "algorithm", None), getattr(training, "steps", None)]
    if training is None:  # keys as before 1.2, so boards of 1.1 files keep their entry keys
        return json_digest([*parts, fusion.options, recipe])[:12]
    return json_digest([*parts, fusion.options, recipe, trained])[:12]


def _without_per_run(config: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in config.items() if k not in PER_RUN_KEYS}
    if isinstance(out.get("train"), dict):
        out["train"] = _without_per_run(out["train"])
    return out


@dataclass
class Run:
    """One accepted results file."""

    path: Path
    results: EvalResults

    @property
    def seed(self) -> int | None:
        """The training seed, if known."""
        return training_seed(self.results)


@dataclass
class Entry:
    """The runs of one model + adapter + recipe, over training seeds."""

    key: str
    runs: list[Run] = field(default_factory=list)

    @property
    def first(self) -> EvalResults:
        """The first run's results (model, adapter and recipe are shared)."""
        return self.runs[0].results

    @property
    def label(self) -> str:
        """``model + adapter``, as the table shows it."""
        prov = self.first.provenance
        return f"{prov.model.name_or_path} + {prov.fusion.name}"

    @property
    def plugin(self) -> str:
        """The adapter's distribution and version (``–`` when the file does not say)."""
        fusion = self.first.provenance.fusion
        if not fusion.distribution:
            return "–"
        return f"{fusion.distribution} {fusion.version or ''}".strip()

    def seeds(self) -> list[Any]:
        """Training seeds of the runs (``None`` where unknown)."""
        return [run.seed for run in self.runs]


def group_entries(runs: list[Run]) -> list[Entry]:
    """Runs grouped into entries, in first-seen order; runs within an entry by training seed."""
    entries: dict[str, Entry] = {}
    for run in runs:
        key = entry_key(run.results)
        entries.setdefault(key, Entry(key)).runs.append(run)
    for entry in entries.values():
        entry.runs.sort(key=lambda r: (r.seed is None, r.seed or 0, r.path.name))
    return list(entries.values())
