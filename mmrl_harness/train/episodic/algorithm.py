"""``EpisodicAlgorithm``: an algorithm on the episodic loop is a rollout scheme, an advantage
estimator, and optional loss terms and metrics.

``train_episodic`` runs the loop and calls, each update: ``collect`` (step the environments),
``compute_advantages`` (fill ``rollout.advantages`` and ``rollout.returns``), then, per
minibatch, the clipped surrogate - entropy + KL (shared) plus ``loss_terms``; ``metrics`` adds
to the update's log row. PPO (``algorithms/ppo.py``) and group-relative episodes
(``algorithms/episodic_grpo.py``) are the two built-ins.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import ValidationError

from mmrl_harness.train.algorithms.base import Algorithm, OptionsField
from mmrl_harness.train.episodic.config import EpisodicConfig

if TYPE_CHECKING:
    import numpy as np
    import torch
    from rich.console import Console
    from torch import nn

    from mmrl_harness.models.loading import LoadedVLM
    from mmrl_harness.train.config import TrainConfig
    from mmrl_harness.train.episodic.policy import PolicySpec, TurnScores
    from mmrl_harness.train.episodic.rollout import EnvPool, Rollout
    from mmrl_harness.train.episodic.trainer import EpisodicTrainResult
    from mmrl_harness.train.policy import PolicyModel


class EpisodicAlgorithm(Algorithm):
    """Base of the algorithms trained by the episodic loop; options in ``episodic:``."""

    options_field: ClassVar[OptionsField] = "episodic"
    #: Standardise each minibatch's advantages when ``episodic.normalize_advantages`` is on.
    normalizes_advantages: ClassVar[bool] = False

    def validate_options(self, options: Mapping[str, Any]) -> None:
        """Validate ``episodic:`` as an ``EpisodicConfig``; the first problem names its key."""
        self.options(options)

    @staticmethod
    def options(options: Mapping[str, Any]) -> EpisodicConfig:
        """The validated ``EpisodicConfig`` (a ``ValueError("episodic.<key>: ...")`` if not)."""
        try:
            return EpisodicConfig.model_validate(dict(options))
        except ValidationError as err:
            first = err.errors(include_url=False)[0]
            where = ".".join(str(p) for p in first["loc"])
            more = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
            raise ValueError(
                f"episodic.{where}: {first['msg']} (got {first.get('input')!r}){more}"
            ) from None

    def check(self, config: TrainConfig) -> None:
        """Every process must take the same number of optimizer steps per epoch, and a rollout
        may hold as few turns as environments (one-turn episodes)."""
        from mmrl_harness.tasks.files import Problem
        from mmrl_harness.train.config import TrainConfigError

        opts, envs = self.options(config.episodic), config.per_device_batch_size
        if opts.num_minibatches > envs:
            raise TrainConfigError(
                None,
                [
                    Problem(
                        "episodic.num_minibatches",
                        f"{opts.num_minibatches} exceeds per_device_batch_size={envs}",
                        f"at most {envs} minibatches",
                    )
                ],
            )

    def train(
        self, config: TrainConfig, policy: PolicyModel, *, console: Console | None = None
    ) -> EpisodicTrainResult:
        """``train_episodic`` with this algorithm (console output goes through Accelerate)."""
        from mmrl_harness.train.episodic.trainer import train_episodic

        return train_episodic(config, policy, algorithm=self)

    @abstractmethod
    def collect(
        self,
        pool: EnvPool,
        actor_critic: nn.Module,
        loaded: LoadedVLM,
        spec: PolicySpec,
        config: TrainConfig,
        opts: EpisodicConfig,
        seeds: np.random.Generator,
        generator: torch.Generator,
    ) -> Rollout:
        """Step the environments: ``rollout.collect_steps`` or ``rollout.collect_episodes``."""

    @abstractmethod
    def compute_advantages(
        self, rollout: Rollout, config: TrainConfig, opts: EpisodicConfig
    ) -> None:
        """Set ``rollout.advantages`` and ``rollout.returns`` (one entry per turn)."""

    def loss_terms(
        self, scores: TurnScores, rollout: Rollout, rows: torch.Tensor, opts: EpisodicConfig
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss added to the shared policy loss of some turns, and what to log about it.

        The default adds nothing: a zero-weight term on the (unused) value head keeps DDP's
        gradient synchronisation complete.
        """
        return 0.0 * scores.values.sum(), {}

    def metrics(self, rollout: Rollout) -> dict[str, float]:
        """Extra per-update metrics of this process's rollout (averaged over processes)."""
        return {}
