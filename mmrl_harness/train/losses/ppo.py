"""PPO's advantage estimator and critic loss: pure functions of tensors, no model, no env.

Shapes follow CleanRL: rollout tensors are ``(T, N)`` (turn, environment); flattened minibatches
are ``(B,)``. Deterministic, so the trainer's numbers can be checked by hand (see
``tests/test_train_episodic.py``). The clipped surrogate itself is shared with the other
policy-gradient algorithms (``losses/policy.py``).
"""

from __future__ import annotations

import torch


def compute_gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    dones: torch.Tensor,
    next_value: torch.Tensor,
    *,
    gamma: float,
    gae_lambda: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimates and returns (Schulman et al. 2016) for a ``(T, N)`` rollout.

    ``dones[t]`` is 1 where turn ``t`` ended its episode: nothing is bootstrapped across it (a
    truncated episode's final value is folded into its last reward by the rollout instead).
    ``next_value`` ``(N,)`` bootstraps the turn after the rollout's last.
    Returns ``(advantages, returns)`` with ``returns = advantages + values``.
    """
    if rewards.shape != values.shape or rewards.shape != dones.shape:
        raise ValueError(
            f"rewards {tuple(rewards.shape)}, values {tuple(values.shape)} and dones "
            f"{tuple(dones.shape)} must all be (turns, envs)"
        )
    steps = rewards.shape[0]
    advantages = torch.zeros_like(rewards)
    last = torch.zeros_like(next_value)
    for t in reversed(range(steps)):
        following = next_value if t == steps - 1 else values[t + 1]
        alive = 1.0 - dones[t].to(rewards.dtype)
        delta = rewards[t] + gamma * following * alive - values[t]
        last = delta + gamma * gae_lambda * alive * last
        advantages[t] = last
    return advantages, advantages + values


def value_loss(
    new_values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    clip_range: float | None,
) -> torch.Tensor:
    """Half the mean squared error to the returns; clipped around the old values when asked."""
    unclipped = (new_values - returns) ** 2
    if clip_range is None:
        return 0.5 * unclipped.mean()
    moved = old_values + (new_values - old_values).clamp(-clip_range, clip_range)
    return 0.5 * torch.maximum(unclipped, (moved - returns) ** 2).mean()


def explained_variance(predicted: torch.Tensor, target: torch.Tensor) -> float:
    """``1 - Var(target - predicted) / Var(target)``: 1 is a perfect value head, <= 0 a useless one."""
    var = target.var(unbiased=False)
    if var.item() == 0:
        return float("nan")
    return float(1.0 - (target - predicted).var(unbiased=False) / var)
