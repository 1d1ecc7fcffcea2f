"""Export a results file for the Hugging Face Hub: eval-results files and model-index metadata.

Two things a user publishing a fine-tuned adapter puts in its model repository:

- ``.eval_results/<task>.yaml``: one file per task, a list with one result: ``dataset.id``,
  ``task_id``, ``value``, ``date`` and ``source {url, name, user}``;
- ``README.md``: a model card whose YAML front matter holds ``model-index`` (written with
  ``huggingface_hub``'s ``ModelCardData`` and ``EvalResult``, so the Hub parses it).

Nothing is uploaded: the files are written to ``out`` for the user to commit or push.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mmrl_harness.leaderboard.board import LeaderboardError
from mmrl_harness.results import load_results

#: What a task name becomes in a file name: letters, digits, '.', '_', '-' only.
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class HubSource:
    """Where the result comes from (the ``source`` of an eval-results entry)."""

    name: str = "mmrl-harness"
    url: str | None = None
    user: str | None = None


def safe_file_stem(name: str) -> str:
    """``name`` as a plain file name (no separators, no leading dots), never empty."""
    stem = _UNSAFE.sub("_", name).lstrip(".") or "task"
    return stem[:100]


def eval_result_entries(
    results_path: str | Path,
    *,
    metric: str = "success_rate",
    dataset_prefix: str = "mmrl-harness",
    source: HubSource | None = None,
) -> dict[str, dict[str, Any]]:
    """Task name -> its eval-results entry, from a results file that verifies."""
    results = load_results(results_path)  # refuses a file that does not verify
    source = source or HubSource()
    out = {}
    for name, task in results.tasks.items():
        value = task.metrics.get(metric)
        if value is None:
            raise LeaderboardError(
                f"{results_path}: task {name!r} has no metric {metric!r}; choose one of "
                f"{sorted(task.metrics)}"
            )
        out[name] = {
            "dataset": {"id": f"{dataset_prefix}/{name}"},
            "task_id": name,
            "value": float(value.value),
            "date": results.created_at[:10],
            "source": {"url": source.url, "name": source.name, "user": source.user},
        }
    return out


def model_card(
    results_path: str | Path,
    *,
    model_name: str,
    metric: str = "success_rate",
    dataset_prefix: str = "mmrl-harness",
    source: HubSource | None = None,
) -> str:
    """A model card (front matter with ``model-index``, then a short body) for the results."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    results = load_results(results_path)
    source = source or HubSource()
    fusion = results.provenance.fusion
    evals = [
        EvalResult(
            task_type="reinforcement-learning",
            task_name=name,
            dataset_type=f"{dataset_prefix}/{name}",
            dataset_name=name,
            metric_type=metric,
            metric_name=metric,
            metric_value=float(task.metrics[metric].value),
            source_name=source.name,
            source_url=source.url,
        )
        for name, task in results.tasks.items()
    ]
    data = ModelCardData(
        model_name=model_name,
        base_model=results.provenance.model.name_or_path,
        library_name="peft" if fusion.checkpoint else None,
        eval_results=evals,
        tags=["mmrl-harness", f"fusion:{fusion.name}"],
    )
    body = (
        f"# {model_name}\n\n{results.provenance.model.name_or_path} with the "
        f"`{fusion.name}` fusion adapter, evaluated by mmrl-harness "
        f"{results.provenance.harness_version} on {', '.join(results.tasks)}.\n"
    )
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}"))


def export_hub(
    results_path: str | Path,
    out: str | Path,
    *,
    model_name: str,
    metric: str = "success_rate",
    dataset_prefix: str = "mmrl-harness",
    source: HubSource | None = None,
) -> list[Path]:
    """Write ``out/.eval_results/<task>.yaml`` and ``out/README.md``; returns the paths."""
    root = Path(out).resolve()
    folder = root / ".eval_results"
    entries = eval_result_entries(
        results_path, metric=metric, dataset_prefix=dataset_prefix, source=source
    )
    card = model_card(
        results_path,
        model_name=model_name,
        metric=metric,
        dataset_prefix=dataset_prefix,
        source=source,
    )
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, entry in entries.items():
        path = (folder / f"{safe_file_stem(name)}.yaml").resolve()
        if path.parent != folder:  # cannot happen after safe_file_stem; checked anyway
            raise LeaderboardError(f"task name {name!r} would write outside {folder}")
        path.write_text(yaml.safe_dump([entry], sort_keys=False))
        written.append(path)
    readme = root / "README.md"
    readme.write_text(card)
    return [*written, readme]
