"""Per-step training metrics beyond TRL's, and a compact Rich progress display, for ``grpo``.

TRL's ``GRPOTrainer`` already logs reward, reward_std, entropy, kl, clip ratios, num_tokens and
step_time. ``RunMeters`` adds what the harness compares fusion strategies by: tokens/s, peak
memory and the fusion adapter's coefficients/gates; ``ManifestCallback`` writes each checkpoint's
``manifest.json``. Only the GRPO trainer uses these callbacks;
the episodic loop logs the same keys itself (``train/episodic/trainer.py:step_metrics``), so
every run's log history has them whichever algorithm trained it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transformers import TrainerCallback

from mmrl_harness.metrics.cost import peak_memory_mib
from mmrl_harness.train.checkpoints import fault_point
from mmrl_harness.train.manifest import CheckpointManifest, write_manifest

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, TaskID
    from transformers import TrainerControl, TrainerState, TrainingArguments


class RunMeters:
    """Throughput since the previous log, peak memory, and the fusion adapter's logged values.

    ``log_values`` is a callable (``PolicyModel.log_values``) read at log time only, so the
    per-step cost is nil.
    """

    def __init__(self, log_values: Callable[[], dict[str, float]] | None = None) -> None:
        self._log_values = log_values
        self._last_time: float | None = None
        self._last_tokens = 0.0

    def start(self, tokens_seen: float = 0.0) -> None:
        """Begin timing (at train begin; a resumed run starts from its restored token count)."""
        self._last_time = time.perf_counter()
        self._last_tokens = tokens_seen

    def collect(self, tokens_seen: float) -> dict[str, float]:
        """Metrics for one log row: ``tokens_per_s``, ``peak_memory_mib``, ``fusion/*``."""
        now = time.perf_counter()
        out: dict[str, float] = {}
        if self._last_time is not None and now > self._last_time:
            out["tokens_per_s"] = (tokens_seen - self._last_tokens) / (now - self._last_time)
        self._last_time, self._last_tokens = now, tokens_seen
        out["peak_memory_mib"] = peak_memory_mib()
        if self._log_values is not None:
            out.update(self._log_values())
        return out


def _format(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


class RichProgressCallback(TrainerCallback):
    """One progress bar with the headline metrics; a plain line per tenth of the run when the
    output is not a terminal (logs, CI). Only the main process shows anything."""

    def __init__(
        self,
        console: Console | None = None,
        keys: Sequence[str] = ("reward", "success", "reward_std", "entropy", "step_time"),
    ) -> None:
        self.console = console
        self.keys = tuple(keys)
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def on_train_begin(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        **kwargs: Any,
    ) -> None:
        if not state.is_world_process_zero:
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.console = self.console or Console()
        self._progress = Progress(
            TextColumn("[bold blue]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.description}"),
            console=self.console,
            transient=False,
        )
        self._progress.start()
        self._task = self._progress.add_task("", total=state.max_steps, completed=state.global_step)

    def on_step_end(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        **kwargs: Any,
    ) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, completed=state.global_step)

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if self._progress is None or self._task is None or not logs:
            return
        shown = "  ".join(f"{k} {_format(logs[k])}" for k in self.keys if k in logs)
        self._progress.update(self._task, description=shown)
        tenth = max(1, state.max_steps // 10)
        console = self.console
        if console is not None and not console.is_terminal and state.global_step % tenth == 0:
            console.print(f"step {state.global_step}/{state.max_steps}  {shown}", highlight=False)

    def on_train_end(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        **kwargs: Any,
    ) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


class ManifestCallback(TrainerCallback):
    """Write ``manifest.json`` into each checkpoint TRL's Trainer has just saved.

    ``on_save`` runs after the Trainer has written the whole ``checkpoint-<step>`` folder
    (``trainer_state.json`` last) and rotated old ones, so the manifest, written last, marks the
    checkpoint complete and hashes its final files. Main process only (``is_world_process_zero``):
    one writer per folder. Also hosts the ``MMRL_FAULT_AT`` test hook (``checkpoints.fault_point``).
    """

    def __init__(self, template: CheckpointManifest) -> None:
        self.template = template

    def on_step_end(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        **kwargs: Any,
    ) -> None:
        # Before the Trainer saves this step's checkpoint: the weights moved, nothing saved.
        fault_point("after-update", state.global_step)

    def on_save(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        **kwargs: Any,
    ) -> None:
        from accelerate import PartialState
        from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

        # Sharded engines write a file per process: all of them exist before any is hashed.
        PartialState().wait_for_everyone()
        if not state.is_world_process_zero:
            return

        folder = Path(str(args.output_dir)) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        fault_point("checkpoint-write", state.global_step)
        write_manifest(folder, self.template, state.global_step)
