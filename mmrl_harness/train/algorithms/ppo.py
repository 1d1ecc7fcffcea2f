"""``ppo``: episodic PPO with a value head and GAE (Schulman et al. 2017; CleanRL's ppo.py).

Each update every environment takes ``episodic.rollout_steps`` turns (episodes run on across
updates); advantages are GAE over those turns, a truncated episode bootstrapped from the value
head; the loss adds ``vf_coef`` x the value loss to the shared clipped surrogate.
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
    from mmrl_harness.train.episodic.policy import PolicySpec, TurnScores
    from mmrl_harness.train.episodic.rollout import EnvPool, Rollout


class PPO(EpisodicAlgorithm):
    """PPO + GAE with a critic (the value head on the answer position's hidden state)."""

    description: ClassVar[str] = "episodic PPO with a value head and GAE"
    normalizes_advantages: ClassVar[bool] = True

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
        """``rollout_steps`` turns per environment, with the values GAE bootstraps from."""
        from mmrl_harness.train.episodic.rollout import collect_steps

        return collect_steps(
            pool,
            actor_critic,
            loaded,
            spec,
            steps=opts.rollout_steps,
            bootstrap=True,
            seeds=seeds,
            seed_pool=config.train_seeds.seeds(),
            generator=generator,
        )

    def compute_advantages(
        self, rollout: Rollout, config: TrainConfig, opts: EpisodicConfig
    ) -> None:
        """GAE; a truncated episode's last reward gets ``gamma * V(final observation)``."""
        from mmrl_harness.train.losses.ppo import compute_gae

        assert rollout.dones is not None and rollout.bootstrap is not None
        assert rollout.next_values is not None
        shape = rollout.dones.shape
        # What GAE sees; rollout.rewards stays the task's, for the metrics.
        targets = rollout.rewards.reshape(shape) + opts.gamma * rollout.bootstrap
        advantages, returns = compute_gae(
            targets,
            rollout.values.reshape(shape),
            rollout.dones,
            rollout.next_values,
            gamma=opts.gamma,
            gae_lambda=opts.gae_lambda,
        )
        rollout.advantages, rollout.returns = advantages.reshape(-1), returns.reshape(-1)

    def loss_terms(
        self, scores: TurnScores, rollout: Rollout, rows: torch.Tensor, opts: EpisodicConfig
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """``vf_coef`` x the value loss (clipped around the rollout's values with clip_value)."""
        from mmrl_harness.train.losses.ppo import value_loss

        device = scores.values.device
        clip = opts.clip_range if opts.clip_value else None
        old_values = rollout.values[rows].to(device)
        v_loss = value_loss(scores.values, old_values, rollout.returns[rows].to(device), clip)
        return opts.vf_coef * v_loss, {"value_loss": v_loss.item()}

    def metrics(self, rollout: Rollout) -> dict[str, float]:
        """``explained_variance`` of the value head on the rollout's returns."""
        from mmrl_harness.train.losses.ppo import explained_variance

        return {"explained_variance": explained_variance(rollout.values, rollout.returns)}
