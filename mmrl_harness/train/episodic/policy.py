"""The actor-critic the episodic trainers optimise: the LoRA-wrapped VLM plus a value head.

The trainers act and score through the one policy head, ``mmrl_harness.policy_head`` — the head
evaluation acts through too —, with this module's ``ActorCritic`` as the forward pass (the same
PEFT model ``loaded.model`` is, plus the value head). So what is evaluated is what is trained:

- ``act`` picks each turn's answer with ``policy_head.act_turn`` and records its
  log-probability, entropy and value;
- ``score_turns`` (the update) builds the model inputs with ``policy_head.turn_inputs`` from each
  turn's own frame and prompt, so the training forward of a turn sees exactly the pixels the
  policy acted on (not the episode's first frame, the failure TRL's ``rollout_func`` has with
  multi-turn images), and the log-probabilities a rollout stores are those the update
  recomputes when the weights have not moved yet.

Two ways to act (``EpisodicConfig.policy_mode``):
- ``action_logits``: a softmax over the ``lm_head`` logits of the task's action words at the
  answer position; the action is one index.
- ``generate``: sampled free text, parsed by the task; its log-probability is the sum over the
  generated tokens (up to and including the end-of-turn token).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from mmrl_harness.fusion.image_context import completion_boundary
from mmrl_harness.policy_head import (
    Answers,
    PolicySpec,
    TurnScores,
    act_turn,
    policy_spec,
    prompt_length,
    score_turns,
)

# The input builder under the name the trainers' callers have used (the same function).
from mmrl_harness.policy_head import turn_inputs as model_inputs

if TYPE_CHECKING:
    import numpy as np

    from mmrl_harness.models.loading import LoadedVLM
    from mmrl_harness.turn_memo import TurnMemo

__all__ = [
    "ActorCritic",
    "Answers",
    "PolicySpec",
    "TurnScores",
    "ValueHead",
    "act",
    "hidden_size",
    "model_inputs",
    "policy_spec",
    "score_turns",
]


class ValueHead(nn.Module):
    """State value from the language model's last hidden state at the answer position.

    Its output layer starts at zero, so the first rollout's values are 0 and early advantages
    are the plain discounted returns rather than noise from a random head.
    """

    def __init__(self, hidden_size: int, width: int = 64) -> None:
        super().__init__()
        out = nn.Linear(width, 1)
        nn.init.zeros_(out.weight)
        nn.init.zeros_(out.bias)
        self.net = nn.Sequential(nn.Linear(hidden_size, width), nn.Tanh(), out)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """``(B, hidden) -> (B,)`` in float32, whatever the model's dtype."""
        return self.net(hidden.float()).squeeze(-1)  # type: ignore[no-any-return]


class ActorCritic(nn.Module):
    """The policy (a PEFT model) and its value head as one module.

    One module, so ``accelerator.prepare`` wraps both for data parallelism, one optimizer steps
    both, and ``accelerator.save_state`` checkpoints both.
    """

    def __init__(self, policy: nn.Module, value_head: ValueHead) -> None:
        super().__init__()
        self.policy = policy
        self.value_head = value_head

    def forward(
        self, inputs: dict[str, torch.Tensor], logits_to_keep: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits of the last ``logits_to_keep`` positions and the value at the first of them."""
        with completion_boundary(self.policy, prompt_length(inputs, logits_to_keep)):
            out = self.policy(**inputs, output_hidden_states=True, logits_to_keep=logits_to_keep)
        hidden = out.hidden_states[-1][:, -logits_to_keep, :]
        return out.logits, self.value_head(hidden)


def hidden_size(model: nn.Module) -> int:
    """The language model's hidden size (what the value head reads)."""
    config: Any = model.config
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return int(text.hidden_size)


def act(
    actor_critic: nn.Module,
    loaded: LoadedVLM,
    spec: PolicySpec,
    frames: Sequence[np.ndarray],
    prompts: Sequence[str],
    generator: torch.Generator,
    memo: TurnMemo | None = None,
) -> tuple[Answers, TurnScores]:
    """One answer per turn (sampled, or greedy when ``spec.do_sample`` is off), scored exactly
    as ``score_turns`` will score it in the update; ``memo``: the rollout's prompt forwards
    (``turn_memo``)."""
    answers, scores = act_turn(actor_critic, loaded, spec, frames, prompts, generator, memo=memo)
    assert scores is not None  # record=True always scores
    return answers, scores
