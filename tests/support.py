"""Helpers shared by several test modules (fixtures live in conftest.py; plain functions here).

pytest puts ``tests/`` on ``sys.path`` (the default ``prepend`` import mode, no ``__init__.py``),
so test modules import these as ``from support import ...``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any


def pip_install_target(site: Path, *sources: Path) -> None:
    """A real ``pip install --target site SOURCE...`` (one pip run for all): no dependencies, no
    build isolation (offline)."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(site),
            *map(str, sources),
        ],
        check=True,
        capture_output=True,
    )


def tiny_grpo_config(output_dir: Path, **overrides: Any) -> Any:
    """TRL's ``GRPOConfig`` for a few CPU steps on a tiny model: float32, no KL, no saving."""
    from trl import GRPOConfig

    settings: dict[str, Any] = {
        "output_dir": str(output_dir),
        "use_cpu": True,
        "bf16": False,
        "fp16": False,
        "gradient_checkpointing": False,
        "beta": 0.0,
        "per_device_train_batch_size": 2,
        "num_generations": 2,
        "max_completion_length": 3,
        "max_steps": 1,
        "save_strategy": "no",
        "report_to": [],
        "seed": 0,
    }
    return GRPOConfig(**{**settings, **overrides})


def color_prompts(colors: list[str]) -> Any:
    """A GRPO dataset: one plain-colour 32 px image per colour, the same question for each."""
    from datasets import Dataset
    from PIL import Image

    return Dataset.from_dict(
        {
            "prompt": [[{"role": "user", "content": "what color is the shape ?"}]] * len(colors),
            "image": [Image.new("RGB", (32, 32), c) for c in colors],
        }
    )
