"""Loss terms every policy-gradient algorithm here shares: the clipped surrogate, the KL to a
reference policy and the entropy of a categorical distribution. Pure functions of tensors."""

from __future__ import annotations

from dataclasses import dataclass

import torch


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
