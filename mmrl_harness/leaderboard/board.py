"""A leaderboard's definition (``leaderboards/<name>/board.yaml``) and where its files live.

A board says which tasks and evaluation seeds every submission must have run, how entries are
ranked (an aggregate of the primary metric over training seeds, with a stratified-bootstrap
CI), which secondary columns the table shows, which provenance fields must be filled, the
minimum number of training seeds per entry, the accepted results-schema versions and the
largest file accepted. The YAML is read with the harness's safe reader (``config_io``): no
aliases, no Python tags, bounded size and depth.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mmrl_harness.config_io import DefinitionError, problems_from, read_yaml_mapping
from mmrl_harness.errors import MMRLError

#: File name of a board's definition inside its folder.
BOARD_FILE = "board.yaml"
#: Folder (inside the board's) of accepted results files, each named ``<sha256>.json``.
SUBMISSIONS = "submissions"
#: Board names: a plain folder name, so a name can never point outside ``boards_dir``.
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
#: Secondary columns a board may ask for (see ``mmrl_harness.leaderboard.ranking.COLUMNS``).
SECONDARY_COLUMNS = (
    "episode_length",
    "invalid_action_rate",
    "steps_to_success",
    "stability",
    "eval_wall_time_s",
    "train_wall_time_s",
    "tokens_generated",
    "trainable_params",
    "money",
)


class LeaderboardError(MMRLError, ValueError):
    """A board name, definition or folder is unusable; the message says what to do instead."""


class BoardDefinitionError(DefinitionError):
    """``board.yaml`` is malformed (names the file, the field and the expected form)."""

    what = "board definition"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SeedRange(_Strict):
    """``{start, count}``: consecutive evaluation seeds."""

    start: int = Field(ge=0, description="first seed")
    count: int = Field(ge=1, le=100_000, description="number of consecutive seeds")


class BoardTask(_Strict):
    """One task every submission must have evaluated, on exactly these seeds."""

    seeds: list[int] | SeedRange = Field(description="evaluation seeds: a list or {start, count}")
    overrides: dict[str, Any] = Field(
        default_factory=dict,
        description="task overrides (dotted KEY: value) that give the board's variant; used by "
        "`mmrl leaderboard reproduce` for runs whose config does not record them",
    )
    task_hash: str | None = Field(
        default=None,
        description="sha256 of the resolved task definition (a results file's tasks.*.task_hash)"
        "; pins the exact variant (image size, step limit...) when given",
    )

    def seed_list(self) -> list[int]:
        """The seeds as a sorted list."""
        if isinstance(self.seeds, SeedRange):
            return list(range(self.seeds.start, self.seeds.start + self.seeds.count))
        return sorted(self.seeds)


class Ranking(_Strict):
    """How entries are ordered: an aggregate over (training seed x task) scores, with a CI."""

    metric: str = Field(default="success_rate", description="per-task metric scored (its .value)")
    aggregate: Literal["iqm", "mean", "median"] = Field(
        default="iqm", description="aggregate over training seeds and tasks (rliable's definitions)"
    )
    higher_is_better: bool = Field(default=True, description="direction of the metric")
    bootstrap_reps: int = Field(
        default=2000, ge=100, le=50_000, description="stratified-bootstrap replicates of the CI"
    )
    confidence: float = Field(default=0.95, gt=0.0, lt=1.0, description="CI level")


class BoardSpec(_Strict):
    """The contents of ``board.yaml``."""

    title: str = Field(description="human-readable title of the page")
    description: str = Field(default="", description="what the board compares (Markdown)")
    tasks: dict[str, BoardTask] = Field(min_length=1, description="task name -> seeds")
    ranking: Ranking = Field(
        default_factory=lambda: Ranking(), description="primary metric and rule"
    )
    secondary: list[str] = Field(
        default_factory=lambda: ["episode_length", "stability", "eval_wall_time_s", "money"],
        description=f"secondary columns, any of: {', '.join(SECONDARY_COLUMNS)}",
    )
    required_provenance: list[str] = Field(
        default_factory=lambda: ["harness_version", "model.fingerprint", "fusion.name"],
        description="dotted provenance fields that must be present and non-empty",
    )
    min_training_seeds: int = Field(
        default=1, ge=1, le=1000, description="runs per entry, at least"
    )
    schema_versions: list[str] = Field(
        default_factory=lambda: ["1.1", "1.2"], description="accepted results schema versions"
    )
    max_file_bytes: int = Field(
        default=16 << 20, ge=1024, le=1 << 30, description="largest results file accepted (bytes)"
    )

    @field_validator("secondary")
    @classmethod
    def _known_columns(cls, value: list[str]) -> list[str]:
        unknown = [c for c in value if c not in SECONDARY_COLUMNS]
        if unknown:
            raise ValueError(f"unknown column(s) {unknown}; choose from {SECONDARY_COLUMNS}")
        return value


class Board:
    """A board on disk: its folder, its definition and its submissions folder."""

    def __init__(self, name: str, boards_dir: str | Path = "leaderboards") -> None:
        if not NAME_PATTERN.match(name):
            raise LeaderboardError(
                f"board name {name!r} is not a plain folder name; use lower-case letters, "
                "digits, '-' and '_' (at most 64), e.g. 'tiny-starter'"
            )
        self.name = name
        self.boards_dir = Path(boards_dir).resolve()
        self.root = (self.boards_dir / name).resolve()
        if self.root.parent != self.boards_dir:  # a symlinked board folder pointing elsewhere
            raise LeaderboardError(
                f"board folder {self.boards_dir / name} resolves to {self.root}, outside "
                f"{self.boards_dir}; replace the link with the folder itself"
            )
        path = self.root / BOARD_FILE
        if not path.is_file():
            raise LeaderboardError(
                f"no board {name!r}: {path} does not exist; create it (see docs/leaderboards.md) "
                f"or pass --boards-dir DIR"
            )
        self.spec = load_board_spec(path)

    @property
    def submissions(self) -> Path:
        """The folder of accepted results files."""
        return self.root / SUBMISSIONS

    def inside(self, path: Path) -> Path:
        """``path`` resolved, or a ``LeaderboardError`` unless it lies inside the board folder."""
        resolved = path.resolve()
        if not resolved.is_relative_to(self.root):
            raise LeaderboardError(
                f"{path} resolves to {resolved}, outside the board folder {self.root}; "
                "the harness never writes there (remove the symlink)"
            )
        return resolved

    def stored_files(self) -> list[Path]:
        """Accepted results files, sorted by name (their digest)."""
        if not self.submissions.is_dir():
            return []
        return sorted(p for p in self.submissions.glob("*.json") if _is_digest_name(p.name))


def load_board_spec(path: Path) -> BoardSpec:
    """The validated definition in ``path`` (a ``BoardDefinitionError`` naming the field)."""
    data = read_yaml_mapping(path, BoardDefinitionError)
    try:
        return BoardSpec.model_validate(data)
    except ValidationError as err:
        raise BoardDefinitionError(path, problems_from(err, BoardSpec)) from None


def _is_digest_name(name: str) -> bool:
    stem = name.removesuffix(".json")
    return len(stem) == 64 and all(c in "0123456789abcdef" for c in stem)
