"""The sweep file: a validated description of many training runs, and its expansion into cells.

A sweep file names a base training config (any ``mmrl train`` YAML), dotted overrides on it, and
factors: models x fusion adapters (with options) x tasks (with task overrides, and optionally
their own base config and training overrides) x algorithms x seeds, as a ``grid`` (every
combination) and/or an explicit list of ``cells``. ``expand`` turns it into ``Cell``s, each a
complete, validated ``TrainConfig`` with a readable, stable id. ``docs/sweeps.md`` documents
every field. Imports only pydantic and PyYAML (no torch), so ``--dry-run`` is fast.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mmrl_harness.config_io import (
    DefinitionError,
    Problem,
    apply_overrides,
    problems_from,
    read_yaml_mapping,
)
from mmrl_harness.errors import MMRLError

if TYPE_CHECKING:
    from mmrl_harness.train.config import TrainConfig

#: Characters kept in a cell id's readable part; anything else becomes "-".
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
#: Hex digits of the config hash at the end of a cell id.
HASH_CHARS = 8
#: TrainConfig fields that say where or how a run is stored, not what it computes: left out of
#: the config hash so the same cell keeps its id wherever the sweep folder lives.
_NOT_HASHED = ("output_dir", "resume", "allow_config_change")


class SweepError(MMRLError, RuntimeError):
    """A sweep cannot run as asked (a cell's config is invalid, a folder is unusable...)."""


class SweepFileError(DefinitionError):
    """A sweep file is malformed; says which file, which field, and the expected form."""

    what = "sweep file"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Named(_Strict):
    """An entry written either as a plain name or as a mapping with ``name:``."""

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, data: Any) -> Any:
        return {"name": data} if isinstance(data, str) else data


class ModelEntry(_Named):
    """One model of the grid."""

    name: str = Field(description="a Hub id, a local folder, or tiny-llava / tiny-qwen2-vl")
    label: str | None = Field(None, description="short name in cell ids (default: the name)")


class FusionEntry(_Named):
    """One fusion adapter of the grid, with its options."""

    name: str = Field(description="a registered fusion adapter (`mmrl plugins --kind fusion`)")
    options: dict[str, Any] = Field(
        default_factory=dict, description="the adapter's options, e.g. {every: 2}"
    )
    label: str | None = Field(
        None,
        description="short name in cell ids (default: the name); needed to tell apart two "
        "entries of one adapter with different options",
    )


class TaskEntry(_Named):
    """One task of the grid, with its overrides and optionally its own base config."""

    name: str = Field(description="a task name (`mmrl tasks`) or a task YAML path")
    overrides: dict[str, Any] = Field(
        default_factory=dict,
        description="dotted task fields to replace (merged over the base config's "
        "task_overrides), e.g. {env_kwargs.image_size: 64, env_kwargs.line_length: 5}",
    )
    base: str | None = Field(
        None, description="this task's base training config (default: the sweep's base)"
    )
    train: dict[str, Any] = Field(
        default_factory=dict,
        description="dotted training-config overrides for this task's cells, e.g. "
        "{max_steps: 20, episodic.rollout_steps: 8}",
    )
    label: str | None = Field(
        None,
        description="short name in cell ids (default: the task name); needed to tell "
        "apart two entries of one task with different overrides",
    )


class Grid(_Strict):
    """Every combination of the listed factors; an omitted factor keeps the base config's."""

    models: list[ModelEntry] | None = Field(None, description="models to train")
    fusions: list[FusionEntry] | None = Field(None, description="fusion adapters to compare")
    tasks: list[TaskEntry] | None = Field(None, description="tasks to train on")
    algorithms: list[str] | None = Field(None, description="algorithms (grpo, ppo, ...)")
    seeds: list[int] | None = Field(None, description="training seeds")


class CellEntry(_Strict):
    """One explicit cell; an omitted factor keeps the base config's."""

    model: ModelEntry | None = Field(None, description="the model")
    fusion: FusionEntry | None = Field(None, description="the fusion adapter")
    task: TaskEntry | None = Field(None, description="the task")
    algorithm: str | None = Field(None, description="the algorithm")
    seed: int | None = Field(None, description="the training seed")


class Resources(_Strict):
    """What one cell may use: its torch thread budget and its Ray resource request."""

    num_cpus: int = Field(
        1,
        ge=1,
        description="CPU threads per cell: torch.set_num_threads in every executor, "
        "and the Ray task's num_cpus",
    )
    num_gpus: float = Field(0, ge=0, description="GPUs per cell (the Ray task's num_gpus)")


class SweepSpec(_Strict):
    """A sweep: base config + overrides, a grid and/or explicit cells, resources, output."""

    base: str | None = Field(
        None,
        description="the base training config YAML (relative to the sweep file), e.g. "
        "../examples/grpo_color_tiny.yaml; optional when every task names its own base",
    )
    overrides: dict[str, Any] = Field(
        default_factory=dict,
        description="dotted training-config overrides for every cell, e.g. {max_steps: 20}",
    )
    output_dir: str = Field(
        "runs/sweep", description="the sweep folder (relative to the working directory)"
    )
    grid: Grid | None = Field(None, description="factors whose every combination is a cell")
    cells: list[CellEntry] = Field(default_factory=list, description="explicit extra cells")
    resources: Resources = Field(
        default_factory=Resources,  # type: ignore[arg-type]
        description="{num_cpus, num_gpus} per cell",
    )

    @model_validator(mode="after")
    def _has_cells(self) -> SweepSpec:
        if self.grid is None and not self.cells:
            raise ValueError("grid: the sweep has no cells: give a grid:, a cells: list, or both")
        return self


class Cell(BaseModel):
    """One resolved run of a sweep: its id, the factors that define it, its training config."""

    id: str
    factors: dict[str, Any]
    config: dict[str, Any]  # a TrainConfig as JSON, output_dir inside the cell folder
    config_hash: str


def load_sweep(path: str | Path) -> SweepSpec:
    """Read and validate the sweep file at ``path`` (a ``SweepFileError`` names what is wrong)."""
    path = Path(path)
    data = read_yaml_mapping(path, SweepFileError, "a mapping (base:, grid:, cells:, ...)")
    try:
        return SweepSpec.model_validate(data)
    except ValidationError as err:
        raise SweepFileError(path, problems_from(err, SweepSpec)) from None


def expand(spec: SweepSpec, source: str | Path, output_dir: str | Path | None = None) -> list[Cell]:
    """Every cell of ``spec`` (grid first, then explicit cells; duplicates once), each with a
    validated training config writing into ``<output_dir>/cells/<id>/run``.

    ``source`` is the sweep file (relative base paths start from its folder); ``output_dir``
    replaces the file's ``output_dir``.
    """
    resolver = _Resolver(spec, Path(source), Path(output_dir or spec.output_dir).resolve())
    combos: list[tuple[Any, ...]] = []
    if spec.grid is not None:
        g = spec.grid
        factors = [g.models, g.tasks, g.algorithms, g.fusions, g.seeds]
        # An omitted factor is one None: the base config's value.
        combos += itertools.product(*(list(f) if f else [None] for f in factors))
    combos += [(c.model, c.task, c.algorithm, c.fusion, c.seed) for c in spec.cells]
    cells: dict[str, Cell] = {}
    for combo in combos:
        cell = resolver.cell(*combo)
        cells.setdefault(cell.id, cell)
    return list(cells.values())


class _Resolver:
    """Builds cells: reads each base config once, applies overrides and factors, validates."""

    def __init__(self, spec: SweepSpec, source: Path, output_dir: Path) -> None:
        self.spec, self.source, self.output_dir = spec, source, output_dir
        self._bases: dict[Path, dict[str, Any]] = {}

    def _base(self, name: str | None, where: str) -> dict[str, Any]:
        if name is None:
            raise SweepFileError(
                self.source,
                [Problem(where, "no base training config", "base: PATH, for the sweep or task")],
            )
        path = (self.source.parent / name).resolve()
        if path not in self._bases:
            from mmrl_harness.train.config import TrainConfigError

            self._bases[path] = read_yaml_mapping(path, TrainConfigError)
        return self._bases[path]

    def cell(
        self,
        model: ModelEntry | None,
        task: TaskEntry | None,
        algorithm: str | None,
        fusion: FusionEntry | None,
        seed: int | None,
    ) -> Cell:
        """The cell of these factors (None: the base config's value)."""
        from mmrl_harness.train.config import TrainConfigError, train_config_from_dict

        base = self._base(task.base if task and task.base else self.spec.base, "base")
        data = apply_overrides(
            base, self.spec.overrides, self.source, SweepFileError, ("task_overrides",)
        )
        if task is not None:
            data = apply_overrides(
                data, task.train, self.source, SweepFileError, ("task_overrides",)
            )
            data["task"] = task.name
            data["task_overrides"] = {**data.get("task_overrides", {}), **task.overrides}
        if model is not None:
            data["model"] = model.name
        if fusion is not None:
            data["fusion"] = {"name": fusion.name, "options": dict(fusion.options)}
        if algorithm is not None:
            data["algorithm"] = algorithm
        if seed is not None:
            data["seed"] = seed
        try:
            config = train_config_from_dict(data, f"{self.source} (cell {_describe(data)})")
        except TrainConfigError as err:
            raise SweepError(f"{err}; fix the sweep file's factors or overrides") from None
        dumped = config.model_dump(mode="json")
        digest = config_hash(dumped)
        cell_id = f"{_readable_id(config, model, fusion, task)}__{digest}"
        dumped["output_dir"] = str(self.output_dir / "cells" / cell_id / "run")
        factors = {
            "model": config.model,
            "fusion": config.fusion.name,
            "fusion_options": dict(config.fusion.options),
            "task": config.task,
            "task_overrides": dict(config.task_overrides),
            "algorithm": config.algorithm,
            "seed": config.seed,
        }
        return Cell(id=cell_id, factors=factors, config=dumped, config_hash=digest)


def config_hash(config: Mapping[str, Any]) -> str:
    """A short hash of a training config's JSON, without the fields that only say where it
    is stored (``output_dir``, ``resume``, ``allow_config_change``)."""
    kept = {k: v for k, v in config.items() if k not in _NOT_HASHED}
    text = json.dumps(kept, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:HASH_CHARS]


def _readable_id(
    config: TrainConfig,
    model: ModelEntry | None,
    fusion: FusionEntry | None,
    task: TaskEntry | None,
) -> str:
    """``<model>__<fusion>__<task>__<algorithm>__s<seed>`` from labels, else names."""
    parts = [
        (model.label if model else None) or Path(config.model).name,
        (fusion.label if fusion else None) or config.fusion.name,
        (task.label if task else None) or Path(config.task).stem,
        config.algorithm,
        f"s{config.seed}",
    ]
    return "__".join(_UNSAFE.sub("-", part) for part in parts)


def _describe(data: Mapping[str, Any]) -> str:
    """``model=..., fusion=..., task=...`` of a cell's raw config, for error messages."""
    fusion = data.get("fusion")
    names = {
        "model": data.get("model"),
        "fusion": fusion.get("name") if isinstance(fusion, Mapping) else fusion,
        "task": data.get("task"),
        "algorithm": data.get("algorithm"),
        "seed": data.get("seed"),
    }
    return ", ".join(f"{k}={v}" for k, v in names.items() if v is not None)
