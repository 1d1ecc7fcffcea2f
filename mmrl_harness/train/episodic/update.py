"""The optimisation half of an episodic update: clipped PPO / group-relative steps on a rollout.

Every minibatch re-scores its turns with ``score_turns`` — the function that scored them while
acting — on each turn's own frame, prompt and answer; the processor's output for those turns is
the one kept while acting (``Rollout.processed``), re-batched, not recomputed. The loss is the clipped surrogate, minus
``ent_coef`` x entropy, plus the algorithm's own ``loss_terms`` (PPO: ``vf_coef`` x the value
loss) and ``kl_coef`` x the KL to the reference policy (the same model with LoRA disabled) when
that is on.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from typing import TYPE_CHECKING

import torch

from mmrl_harness.train.episodic.policy import PolicySpec, score_turns
from mmrl_harness.train.losses.policy import clipped_policy_loss, kl_to_reference

if TYPE_CHECKING:
    from accelerate import Accelerator

    from mmrl_harness.models.loading import LoadedVLM
    from mmrl_harness.processed_turns import ProcessedTurns
    from mmrl_harness.train.episodic.algorithm import EpisodicAlgorithm
    from mmrl_harness.train.episodic.config import EpisodicConfig
    from mmrl_harness.train.episodic.rollout import Rollout


def reference_logprobs(
    accelerator: Accelerator,
    model: torch.nn.Module,
    loaded: LoadedVLM,
    spec: PolicySpec,
    rollout: Rollout,
    chunks: int,
) -> torch.Tensor:
    """Log-probabilities of the rollout's answers under the model with LoRA disabled."""
    inner = accelerator.unwrap_model(model)
    parts = []
    with torch.no_grad(), inner.policy.disable_adapter():
        for rows in torch.tensor_split(torch.arange(len(rollout)), chunks):
            frames = [rollout.frames[int(i)] for i in rows]
            prompts = [rollout.prompts[int(i)] for i in rows]
            answers = rollout.answers.select(rows)
            scores = score_turns(
                inner, loaded, spec, frames, prompts, answers, _processed(rollout, rows)
            )
            parts.append(scores.logprobs.float().cpu())
    return torch.cat(parts)


def _processed(rollout: Rollout, rows: torch.Tensor) -> ProcessedTurns | None:
    """The turns' processor output kept while acting (``None``: run the processor again)."""
    return None if rollout.processed is None else rollout.processed.select(rows)


def optimize(
    accelerator: Accelerator,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    params: list[torch.nn.Parameter],
    loaded: LoadedVLM,
    spec: PolicySpec,
    rollout: Rollout,
    opts: EpisodicConfig,
    algorithm: EpisodicAlgorithm,
    micro_batches: int = 1,
) -> dict[str, float]:
    """``ppo_epochs`` x ``num_minibatches`` optimizer steps on a rollout; mean statistics.

    Each minibatch re-scores its turns with ``score_turns`` on their own frames, prompts and
    answers, so before the first step every importance ratio is 1. ``micro_batches`` splits a
    minibatch's forward and backward passes (gradient accumulation) to bound memory; the step
    is the same. With ``opts.target_kl`` the update ends at the first minibatch whose
    approximate KL to the rollout policy (mean over processes, so every process stops at the
    same minibatch) exceeds it, without stepping on that minibatch; ``optimizer_steps`` in the
    returned statistics counts the steps taken. The statistics average the stepped minibatches.
    """
    ref = None
    if opts.kl_coef > 0:
        ref = reference_logprobs(accelerator, model, loaded, spec, rollout, opts.num_minibatches)
    sums: dict[str, float] = defaultdict(float)
    steps, tokens, stopped = 0, 0, False
    for _ in range(opts.ppo_epochs):
        if stopped:  # target_kl: the remaining epochs are skipped too
            break
        order = torch.randperm(len(rollout))  # torch's RNG: checkpointed by save_state
        for rows in torch.tensor_split(order, opts.num_minibatches):
            optimizer.zero_grad(set_to_none=True)
            stats, used = _backward(
                accelerator, model, loaded, spec, rollout, rows, ref, opts, algorithm, micro_batches
            )
            tokens += used
            kl = _mean(accelerator, stats["approx_kl"]) if opts.target_kl is not None else 0.0
            if opts.target_kl is not None and kl > opts.target_kl:
                stopped = True
                break
            for key, value in stats.items():
                sums[key] += value
            if opts.max_grad_norm is not None:
                sums["grad_norm"] += float(accelerator.clip_grad_norm_(params, opts.max_grad_norm))
            optimizer.step()
            steps += 1
    stats = {k: v / max(steps, 1) for k, v in sums.items()}
    stats["num_tokens"] = float(tokens)
    stats["optimizer_steps"] = float(steps)
    return stats


def _mean(accelerator: Accelerator, value: float) -> float:
    """``value`` averaged over processes."""
    tensor = torch.tensor([value], dtype=torch.float64, device=accelerator.device)
    return float(accelerator.reduce(tensor, reduction="mean")[0])


def _backward(
    accelerator: Accelerator,
    model: torch.nn.Module,
    loaded: LoadedVLM,
    spec: PolicySpec,
    rollout: Rollout,
    rows: torch.Tensor,
    ref: torch.Tensor | None,
    opts: EpisodicConfig,
    algorithm: EpisodicAlgorithm,
    micro_batches: int,
) -> tuple[dict[str, float], int]:
    """Accumulate one minibatch's gradient; its statistics and the tokens processed."""
    advantages = rollout.advantages[rows]
    if algorithm.normalizes_advantages and opts.normalize_advantages and len(rows) > 1:
        # Over the whole minibatch, not per micro-batch: the step must not depend on it.
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    sums: dict[str, float] = defaultdict(float)
    tokens = 0
    parts = [p for p in torch.tensor_split(torch.arange(len(rows)), micro_batches) if len(p)]
    for index, part in enumerate(parts):
        # DDP syncs gradients on the last micro-batch only.
        sync = index == len(parts) - 1
        with contextlib.nullcontext() if sync else accelerator.no_sync(model):
            loss, stats, used = _loss(
                model, loaded, spec, rollout, rows[part], advantages[part], ref, opts, algorithm
            )
            accelerator.backward(loss * (len(part) / len(rows)))
        tokens += used
        for key, value in stats.items():
            sums[key] += value * len(part) / len(rows)
    return dict(sums), tokens


def _loss(
    model: torch.nn.Module,
    loaded: LoadedVLM,
    spec: PolicySpec,
    rollout: Rollout,
    rows: torch.Tensor,
    advantages: torch.Tensor,
    ref: torch.Tensor | None,
    opts: EpisodicConfig,
    algorithm: EpisodicAlgorithm,
) -> tuple[torch.Tensor, dict[str, float], int]:
    """The loss of some turns, its parts for logging, and the tokens processed."""
    frames = [rollout.frames[int(i)] for i in rows]
    prompts = [rollout.prompts[int(i)] for i in rows]
    answers = rollout.answers.select(rows)
    scores = score_turns(model, loaded, spec, frames, prompts, answers, _processed(rollout, rows))
    device = scores.logprobs.device
    old = rollout.logprobs[rows].to(device)
    surrogate = clipped_policy_loss(scores.logprobs, old, advantages.to(device), opts.clip_range)
    entropy = scores.entropy.mean()
    loss = surrogate.loss - opts.ent_coef * entropy
    stats = {
        "policy_loss": surrogate.loss.item(),
        "entropy": entropy.item(),
        "clip_ratio": float(surrogate.clip_fraction),
        "approx_kl": float(surrogate.approx_kl),
    }
    extra, extra_stats = algorithm.loss_terms(scores, rollout, rows, opts)
    loss = loss + extra
    stats.update(extra_stats)
    if ref is not None:
        kl = kl_to_reference(scores.logprobs, ref[rows].to(device)).mean()
        loss = loss + opts.kl_coef * kl
        stats["kl"] = kl.item()
    stats["loss"] = loss.item()
    return loss, stats, scores.tokens
