"""Checks that run before any model loads, so a bad input costs a second, not a model download.

``mmrl eval`` and ``mmrl train`` call these first: the output path is writable, seeds parse,
plugin names exist, every task resolves to a registered env whose action map fits its action
space. Each failure is an ``MMRLError`` naming the option or field and the offending value.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from mmrl_harness.errors import InputError

if TYPE_CHECKING:
    from mmrl_harness.tasks.schema import TaskDefinition
    from mmrl_harness.train.config import TrainConfig


def parse_seeds(text: str, option: str = "--seeds") -> list[int]:
    """``"1,2,5"`` -> ``[1, 2, 5]``; anything but comma-separated non-negative ints raises."""
    seeds: list[int] = []
    for part in text.split(","):
        within = "" if part.strip() == text.strip() else f" (in {text!r})"
        try:
            seed = int(part.strip())
        except ValueError:
            raise InputError(
                f"{option}: {part.strip()!r} is not an integer{within}; expected "
                "comma-separated non-negative integers such as 0,1,2"
            ) from None
        if seed < 0:
            raise InputError(
                f"{option}: seed {seed} is negative{within}; environment seeds are "
                "non-negative integers such as 0,1,2"
            )
        seeds.append(seed)
    return seeds


def check_output_file(path: str | Path, option: str = "--output") -> None:
    """Raise unless a results file can be written at ``path`` (before any work is done)."""
    target = Path(path)
    if target.is_dir():
        raise InputError(
            f"{option}: {str(path)!r} is a directory; give a file path such as "
            f"{str(target / 'eval.json')!r}"
        )
    # The first existing ancestor must be a writable folder (missing ones are created later).
    parent = target.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(
            f"{option}: cannot write {str(path)!r}: {str(parent)!r} is a file, not a folder"
        )
    writable = os.access(target, os.W_OK) if target.exists() else os.access(parent, os.W_OK)
    if not writable:
        where = str(target) if target.exists() else str(parent)
        raise InputError(
            f"{option}: cannot write {str(path)!r}: {where!r} is not writable; choose another path"
        )


def check_task_runs(task: TaskDefinition) -> None:
    """Build the task's env once (and close it): checks the env id, its keyword arguments and
    the ``actions`` map against the action space, without a model."""
    from mmrl_harness.tasks import make_task_env

    make_task_env(task).close()


def check_eval_inputs(
    tasks: list[TaskDefinition], fusion: str | None, output: str | Path | None
) -> None:
    """What ``run_eval`` checks before loading the model (``fusion`` None: a checkpoint's
    manifest names it, checked when the manifest is read)."""
    from mmrl_harness.registry import fusion_adapters

    if output is not None:
        check_output_file(output)
    if fusion is not None:
        fusion_adapters.require(fusion)
    for task in tasks:
        check_task_runs(task)


def check_train_inputs(config: TrainConfig) -> TaskDefinition:
    """What ``train`` checks before building the policy; returns the resolved task."""
    from mmrl_harness.registry import UnknownPluginError, fusion_adapters
    from mmrl_harness.tasks import get_task, with_overrides

    output_dir = Path(config.output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise InputError(
            f"output_dir: {config.output_dir!r} is a file; training writes a folder of "
            "checkpoints there, so choose a folder path"
        )
    try:
        fusion_adapters.require(config.fusion.name)
    except UnknownPluginError as err:
        raise InputError(f"training config fusion.name: {err}") from None
    task = get_task(config.task, allow_env_imports=config.allow_env_imports)
    if config.task_overrides:
        task = with_overrides(task, config.task_overrides)
    check_task_runs(task)
    return task
