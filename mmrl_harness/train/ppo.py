"""PPO and group-relative losses and advantages: pure functions of tensors, no model, no env.

Shapes follow CleanRL: rollout tensors are ``(T, N)`` (turn, environment); flattened minibatches
are ``(B,)``. Everything here is differentiable where it must be and deterministic, so the
trainer's numbers can be checked by hand (see ``tests/test_train_episodic.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

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


def group_relative_advantages(
    returns: torch.Tensor, group_ids: torch.Tensor, *, eps: float = 1e-4
) -> torch.Tensor:
    """``(return - group mean) / (group std + eps)`` per episode, as in GRPO.

    ``returns`` and ``group_ids`` are ``(E,)``, one entry per episode; episodes sharing a group id
    started from the same environment seed. The std is the population std (TRL's GRPO uses the
    sample std; with G >= 4 the two differ by little and this one is defined for G = 1).
    """
    if returns.shape != group_ids.shape or returns.ndim != 1:
        raise ValueError(
            f"returns {tuple(returns.shape)} and group_ids {tuple(group_ids.shape)} must be "
            "equal-length vectors, one entry per episode"
        )
    _, inverse, counts = torch.unique(group_ids, return_inverse=True, return_counts=True)
    groups = counts.shape[0]
    sums = torch.zeros(groups, dtype=returns.dtype).index_add_(0, inverse, returns)
    means = sums / counts.to(returns.dtype)
    centred = returns - means[inverse]
    variances = torch.zeros(groups, dtype=returns.dtype).index_add_(0, inverse, centred**2)
    stds = (variances / counts.to(returns.dtype)).sqrt()
    return centred / (stds[inverse] + eps)


@dataclass(frozen=True)
class PolicyLoss:
    """The clipped surrogate and what to log about it."""

    loss: torch.Tensor  # scalar, to minimise
    clip_fraction: torch.Tensor  # share of samples whose ratio left [1 - eps, 1 + eps]
    approx_kl: torch.Tensor  # k3 estimate of KL(old || new), Schulman's low-variance estimator


def clipped_policy_loss(
    new_logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    clip_range: float,
) -> PolicyLoss:
    """PPO's clipped surrogate objective, negated, averaged over the minibatch."""
    log_ratio = new_logprobs - old_logprobs
    ratio = log_ratio.exp()
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - clip_range, 1.0 + clip_range)
    loss = torch.maximum(unclipped, clipped).mean()
    with torch.no_grad():
        clip_fraction = ((ratio - 1.0).abs() > clip_range).float().mean()
        approx_kl = ((ratio - 1.0) - log_ratio).mean()
    return PolicyLoss(loss, clip_fraction, approx_kl)


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


def kl_to_reference(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """Per-sample k3 estimate of KL(policy || reference) from sampled actions' log-probabilities.

    ``exp(ref - logp) - (ref - logp) - 1`` is non-negative and unbiased (the estimator TRL's
    GRPO uses for ``beta > 0``).
    """
    delta = ref_logprobs - logprobs
    return delta.exp() - delta - 1.0


def categorical_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the softmax over the last dimension."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(dim=-1)


def explained_variance(predicted: torch.Tensor, target: torch.Tensor) -> float:
    """``1 - Var(target - predicted) / Var(target)``: 1 is a perfect value head, <= 0 a useless one."""
    var = target.var(unbiased=False)
    if var.item() == 0:
        return float("nan")
    return float(1.0 - (target - predicted).var(unbiased=False) / var)
