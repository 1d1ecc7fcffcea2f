"""``EpisodicConfig``: the knobs of the episodic trainers (``ppo`` and ``episodic_grpo``).

A run's shared settings live in ``TrainConfig`` and keep their meaning here, so nothing is said
twice: ``per_device_batch_size`` is the number of environments each process steps side by side,
``num_generations`` the group size of ``episodic_grpo`` (episodes started from one seed),
``max_steps`` the number of updates, ``learning_rate`` Adam's step size, ``save_steps`` the
checkpoint interval, ``temperature`` and ``max_new_tokens`` the sampling of ``generate`` mode,
and ``train_seeds`` the environment seeds episodes start from. Everything specific to episodic
RL is below, validated from ``TrainConfig.episodic``. Imports only pydantic.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class EpisodicConfig(BaseModel):
    """Options of the episodic PPO and group-relative trainers; unknown keys are errors.

    The defaults are the settings measured to learn NumberLine from images on the tiny LLaVA
    (``benchmarks/episodic_learning.py``, docs/episodic.md): GAE 0.99/0.95, clip 0.2, 4 epochs, 16-step rollouts.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    policy_mode: Literal["action_logits", "generate"] = Field(
        "action_logits",
        description="action_logits: a softmax over the lm_head logits of the task's action words "
        "at the answer position (each action word must be one token; fast and well-conditioned "
        "for small discrete action sets); generate: sample free text (up to max_new_tokens) that "
        "the task parses, the action's log-probability being the sum over its tokens",
    )
    rollout_steps: int = Field(
        16,
        ge=1,
        description="ppo: turns each environment takes per update (episodes continue across "
        "updates; an unfinished one is bootstrapped from the value head); episodic_grpo: "
        "unused, each update runs whole episodes (at most the task's max_steps turns)",
    )
    ppo_epochs: int = Field(4, ge=1, description="passes over each rollout's turns per update")
    num_minibatches: int = Field(
        4,
        ge=1,
        description="optimizer steps per epoch; each process splits its turns into this many "
        "minibatches (a count, not a size, so every process takes the same number of steps "
        "even when episode lengths differ)",
    )
    clip_range: float = Field(
        0.2, gt=0, description="PPO ratio clipping epsilon (policy and, when on, value)"
    )
    clip_value: bool = Field(
        False, description="clip the value update around the rollout's value (PPO2 style)"
    )
    gamma: float = Field(0.99, ge=0, le=1, description="discount factor")
    gae_lambda: float = Field(0.95, ge=0, le=1, description="GAE lambda (ppo only)")
    normalize_advantages: bool = Field(
        True, description="ppo: standardise the advantages of each minibatch"
    )
    vf_coef: float = Field(0.5, ge=0, description="weight of the value loss (ppo only)")
    ent_coef: float = Field(
        0.01,
        ge=0,
        description="weight of the entropy bonus; keeps exploring (group-relative training "
        "stops learning for good once every group's returns are equal)",
    )
    kl_coef: float = Field(
        0.0,
        ge=0,
        description="weight of the KL penalty to the reference policy, which is the same model "
        "with LoRA disabled (peft disable_adapter, no second copy); 0 turns it off",
    )
    grpo_std_eps: float = Field(
        1e-4,
        gt=0,
        description="episodic_grpo: added to a group's return std before dividing, so a group "
        "of equal returns gets zero advantage instead of a division by zero",
    )
    target_kl: float | None = Field(
        None,
        gt=0,
        description="end an update's remaining minibatches and epochs once a minibatch's "
        "approximate KL to the rollout policy (averaged over processes) exceeds this, before "
        "stepping on it (as SB3's target_kl, without its 1.5 factor); bounds each update's "
        "policy change so a higher learning rate does not collapse; None turns it off",
    )
    value_learning_rate: float | None = Field(
        None,
        gt=0,
        description="Adam's step size for the value head alone (its own param group); None "
        "uses learning_rate for it too",
    )
    anneal_lr: bool = Field(
        False,
        description="decay every param group's learning rate linearly from its own initial "
        "value (learning_rate, value_learning_rate) towards 0 over max_steps updates, as "
        "CleanRL's anneal_lr: update u steps with lr * (1 - (u - 1) / max_steps), a function of "
        "the update index alone, so a resumed run follows the same schedule; damps the late "
        "drift of a near-deterministic policy",
    )
    max_grad_norm: float | None = Field(
        0.5, gt=0, description="clip the global gradient norm to this; None turns it off"
    )
    value_head_width: int = Field(
        64,
        ge=1,
        description="hidden width of the value head (a 2-layer MLP on the last hidden state at "
        "the answer position)",
    )
    eval_every: int = Field(
        10,
        ge=0,
        description="evaluate the greedy policy every this many updates (and after the last); "
        "0 turns evaluation during training off",
    )
    eval_episodes: int = Field(
        32, ge=1, description="episodes per evaluation, on the task's first evaluation seeds"
    )
    keep_best: bool = Field(
        True,
        description="save the best-evaluating policy to output_dir/best and load it back at the "
        "end (greedy success swings after first passing 0.9, so the last update is not the "
        "best one)",
    )
    stop_at_success: float | None = Field(
        None,
        gt=0,
        le=1,
        description="stop once an evaluation's success rate reaches this (None trains all "
        "max_steps updates)",
    )
