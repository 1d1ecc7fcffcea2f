"""``episodic_grpo``: group-relative advantages over whole episodes, no critic.

Each update runs one whole episode per environment, ``num_generations`` of them from each
environment seed; an episode's advantage is ``(return - group mean) / (group std + eps)``
(``losses/grpo.py``) and every turn of the episode gets it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from mmrl_harness.train.episodic.algorithm import EpisodicAlgorithm

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn

    from mmrl_harness.models.loading import LoadedVLM
    from mmrl_harness.train.config import TrainConfig
    from mmrl_harness.train.episodic.config import EpisodicConfig
    from mmrl_harness.train.episodic.policy import PolicySpec
    from mmrl_harness.train.episodic.rollout import EnvPool, Rollout


class EpisodicGRPO(EpisodicAlgorithm):
    """GRPO's group-relative advantage, over episodes started from one seed."""

    description: ClassVar[str] = "group-relative advantages over whole episodes"

    def check(self, config: TrainConfig) -> None:
        """Environments per process must form whole groups of ``num_generations``."""
        from mmrl_harness.tasks.files import Problem
        from mmrl_harness.train.config import TrainConfigError

        super().check(config)
        envs, group = config.per_device_batch_size, config.num_generations
        if envs % group:
            raise TrainConfigError(
                None,
                [
                    Problem(
                        "per_device_batch_size",
                        f"episodic_grpo runs groups of num_generations={group} episodes from one "
                        f"seed, so the environments per process ({envs}) must be a multiple of it",
                        f"{group * max(1, envs // group)}",
                    )
                ],
            )

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
        """One whole episode per environment, ``num_generations`` per seed."""
        from mmrl_harness.train.episodic.rollout import collect_episodes

        return collect_episodes(
            pool,
            actor_critic,
            loaded,
            spec,
            group_size=config.num_generations,
            seeds=seeds,
            seed_pool=config.train_seeds.seeds(),
            generator=generator,
        )

    def compute_advantages(
        self, rollout: Rollout, config: TrainConfig, opts: EpisodicConfig
    ) -> None:
        """Each turn gets its episode's group-relative advantage; returns are episode returns."""
        import torch

        from mmrl_harness.train.losses.grpo import group_relative_advantages

        assert rollout.episode_ids is not None and rollout.episode_returns is not None
        episode_returns = rollout.episode_returns
        groups = torch.arange(len(episode_returns)) // config.num_generations
        advantage = group_relative_advantages(episode_returns, groups, eps=opts.grpo_std_eps)
        rollout.advantages = advantage[rollout.episode_ids]
        rollout.returns = episode_returns[rollout.episode_ids]
