"""``grpo``: TRL's ``GRPOTrainer`` on single-turn tasks, the reward being the task's own.

The config half is ``TrainConfig`` plus its ``grpo:`` block (extra ``trl.GRPOConfig`` arguments,
mapped by ``grpo_trainer.grpo_arguments``); the trainer half is ``grpo_trainer.train_grpo``.
This module imports neither, so a config naming ``grpo`` validates without TRL.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from mmrl_harness.train.algorithms.base import Algorithm, OptionsField

if TYPE_CHECKING:
    from rich.console import Console

    from mmrl_harness.train.config import TrainConfig
    from mmrl_harness.train.policy import PolicyModel
    from mmrl_harness.train.result import TrainResult


class GRPO(Algorithm):
    """Group Relative Policy Optimization through TRL (single-turn tasks only)."""

    options_field: ClassVar[OptionsField] = "grpo"
    description: ClassVar[str] = "TRL GRPOTrainer on single-turn tasks"

    def check(self, config: TrainConfig) -> None:
        """The task must be single-turn (a ``TrainConfigError`` names the alternatives)."""
        from mmrl_harness.train.algorithms.grpo_trainer import grpo_task

        grpo_task(config)

    def train(
        self, config: TrainConfig, policy: PolicyModel, *, console: Console | None = None
    ) -> TrainResult:
        """``train_grpo``: TRL's trainer on the task's reward; resumes when it can."""
        from mmrl_harness.train.algorithms.grpo_trainer import train_grpo

        return train_grpo(config, policy, console=console)
