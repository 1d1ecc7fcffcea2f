"""The actor-critic the episodic trainers optimise: the LoRA-wrapped VLM plus a value head.

Rollouts and updates score turns with the very same function, ``score_turns``, which builds the
model inputs with ``build_inputs`` from each turn's own frame and prompt. So the training
forward pass of a turn sees exactly the pixels the policy acted on (not the episode's first
frame, the failure TRL's ``rollout_func`` has with multi-turn images), and the log-probabilities
a rollout stores are those the update recomputes when the weights have not moved yet.

Two ways to act (``EpisodicConfig.policy_mode``):
- ``action_logits``: a softmax over the ``lm_head`` logits of the task's action words at the
  answer position; the action is one index.
- ``generate``: sampled free text, parsed by the task; its log-probability is the sum over the
  generated tokens (up to and including the end-of-turn token).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from mmrl_harness.train.losses.policy import categorical_entropy

if TYPE_CHECKING:
    from mmrl_harness.models.loading import LoadedVLM


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
        out = self.policy(**inputs, output_hidden_states=True, logits_to_keep=logits_to_keep)
        hidden = out.hidden_states[-1][:, -logits_to_keep, :]
        return out.logits, self.value_head(hidden)


def hidden_size(model: nn.Module) -> int:
    """The language model's hidden size (what the value head reads)."""
    config: Any = model.config
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return int(text.hidden_size)


@dataclass
class Answers:
    """What the policy answered on a batch of turns (on CPU, one row per turn)."""

    texts: list[str]  # what the environment is stepped with
    actions: torch.Tensor  # action_logits: (B,) index into the action words; generate: (B, G) ids
    mask: torch.Tensor  # generate: (B, G) 1 on generated tokens; action_logits: (B, 1) ones

    def select(self, rows: Sequence[int] | torch.Tensor) -> Answers:
        """The answers of the given rows."""
        index = torch.as_tensor(rows, dtype=torch.long)
        return Answers([self.texts[int(i)] for i in index], self.actions[index], self.mask[index])

    @staticmethod
    def concat(parts: Sequence[Answers]) -> Answers:
        """One ``Answers`` of all rows (generate mode pads ids to the longest answer)."""
        width = max(p.mask.shape[1] for p in parts)

        def pad(t: torch.Tensor, value: int) -> torch.Tensor:
            if t.ndim == 1 or t.shape[1] == width:
                return t
            return nn.functional.pad(t, (0, width - t.shape[1]), value=value)

        return Answers(
            [t for p in parts for t in p.texts],
            torch.cat([pad(p.actions, 0) for p in parts]),
            torch.cat([pad(p.mask, 0) for p in parts]),
        )


@dataclass
class TurnScores:
    """The model's view of a batch of turns, for the answers given."""

    logprobs: torch.Tensor  # (B,) log-probability of each answer
    entropy: torch.Tensor  # (B,) entropy of the action distribution (per token in generate)
    values: torch.Tensor  # (B,) value head output
    tokens: int  # tokens processed (prompt + image + answer), for throughput


@dataclass(frozen=True)
class PolicySpec:
    """How the policy acts: the mode, the action words' token ids, sampling settings."""

    mode: str
    action_words: tuple[str, ...]
    action_ids: tuple[int, ...]  # action_logits: token id of each action word
    suppressed_ids: tuple[int, ...]  # generate: ids never sampled (pad, roles, image tokens)
    temperature: float
    max_new_tokens: int


def policy_spec(
    loaded: LoadedVLM,
    mode: str,
    action_words: Sequence[str],
    temperature: float,
    max_new_tokens: int,
) -> PolicySpec:
    """Resolve token ids once per run; errors name the word that is not a single token."""
    from mmrl_harness.rollout import action_token_ids

    action_ids = tuple(action_token_ids(loaded, action_words)) if mode == "action_logits" else ()
    gen = loaded.model.generation_config
    suppressed = tuple(
        int(i) for i in (getattr(gen, "suppress_tokens", None) or []) if i is not None
    )
    return PolicySpec(
        mode, tuple(action_words), action_ids, suppressed, temperature, max_new_tokens
    )


def model_inputs(
    loaded: LoadedVLM,
    frames: Sequence[np.ndarray],
    prompts: Sequence[str],
    answers: Answers | None = None,
    spec: PolicySpec | None = None,
) -> tuple[dict[str, torch.Tensor], int]:
    """``build_inputs`` on each turn's own frame, plus the answer tokens in generate mode.

    Returns the inputs and ``logits_to_keep``. Position ids follow the attention mask (as in
    ``generate``) so a turn scores the same whatever the left padding of the batch it is in.
    """
    from PIL import Image

    from mmrl_harness.models.generation import add_position_ids, build_inputs

    inputs = dict(build_inputs(loaded, [Image.fromarray(f) for f in frames], list(prompts)))
    keep = 1
    if answers is not None and spec is not None and spec.mode == "generate":
        prompt_ids = inputs["input_ids"]
        ids = answers.actions.to(prompt_ids.device)
        for key, value in list(inputs.items()):
            # Per-token side inputs (Qwen2-VL's mm_token_type_ids): answer tokens are text, 0.
            if key not in ("input_ids", "attention_mask") and value.shape[:2] == prompt_ids.shape:
                inputs[key] = torch.cat([value, value.new_zeros(ids.shape)], dim=1)
        mask = inputs["attention_mask"]
        inputs["input_ids"] = torch.cat([prompt_ids, ids], dim=1)
        inputs["attention_mask"] = torch.cat([mask, answers.mask.to(mask.device, mask.dtype)], 1)
        keep = ids.shape[1] + 1
    return add_position_ids(loaded, inputs), keep


def score_turns(
    actor_critic: nn.Module,
    loaded: LoadedVLM,
    spec: PolicySpec,
    frames: Sequence[np.ndarray],
    prompts: Sequence[str],
    answers: Answers,
) -> TurnScores:
    """Log-probabilities, entropies and values of ``answers`` on these turns (differentiable)."""
    inputs, keep = model_inputs(loaded, frames, prompts, answers, spec)
    logits, values = actor_critic(inputs, keep)
    return _scores(spec, logits, values, answers, int(inputs["attention_mask"].sum()))


def _action_scores(spec: PolicySpec, logits: torch.Tensor) -> torch.Tensor:
    return logits[:, -1, list(spec.action_ids)].float() / spec.temperature


def _scores(
    spec: PolicySpec, logits: torch.Tensor, values: torch.Tensor, answers: Answers, tokens: int
) -> TurnScores:
    device = logits.device
    if spec.mode == "action_logits":
        scores = _action_scores(spec, logits)
        logp_all = torch.log_softmax(scores, dim=-1)
        logprobs = logp_all.gather(1, answers.actions.to(device)[:, None]).squeeze(1)
        entropy = categorical_entropy(scores)
    else:
        scores = _masked(logits[:, :-1, :].float() / spec.temperature, spec.suppressed_ids)
        logp_all = torch.log_softmax(scores, dim=-1)
        ids, mask = answers.actions.to(device), answers.mask.to(device, scores.dtype)
        token_logp = logp_all.gather(2, ids[:, :, None]).squeeze(2)
        # where, not a product: padding after the end of turn is a suppressed id (-inf), and
        # 0 * -inf would be nan.
        logprobs = torch.where(mask > 0, token_logp, 0.0).sum(1)
        # Suppressed tokens have probability 0 and log-probability -inf: 0 * -inf must be 0.
        token_entropy = -(logp_all.exp() * logp_all.nan_to_num(neginf=0.0)).sum(-1)
        entropy = (token_entropy * mask).sum(1) / mask.sum(1).clamp(min=1)
    return TurnScores(logprobs, entropy, values, tokens)


def _masked(scores: torch.Tensor, suppressed: Sequence[int]) -> torch.Tensor:
    if not suppressed:
        return scores
    scores = scores.clone()
    scores[..., list(suppressed)] = float("-inf")
    return scores


@torch.no_grad()
def act(
    actor_critic: nn.Module,
    loaded: LoadedVLM,
    spec: PolicySpec,
    frames: Sequence[np.ndarray],
    prompts: Sequence[str],
    generator: torch.Generator,
) -> tuple[Answers, TurnScores]:
    """Sample one answer per turn and score it, exactly as ``score_turns`` will in the update."""
    if spec.mode == "generate":
        answers = _generate(loaded, spec, frames, prompts, generator)
        return answers, score_turns(actor_critic, loaded, spec, frames, prompts, answers)
    # action_logits: one forward both samples the action and scores it.
    inputs, keep = model_inputs(loaded, frames, prompts)
    logits, values = actor_critic(inputs, keep)
    probs = _action_scores(spec, logits).softmax(-1).cpu()
    picks = torch.multinomial(probs, 1, generator=generator).squeeze(1)
    answers = Answers([spec.action_words[int(i)] for i in picks], picks, torch.ones(len(picks), 1))
    return answers, _scores(spec, logits, values, answers, int(inputs["attention_mask"].sum()))


def _generate(
    loaded: LoadedVLM,
    spec: PolicySpec,
    frames: Sequence[np.ndarray],
    prompts: Sequence[str],
    generator: torch.Generator,
) -> Answers:
    from mmrl_harness.models.generation import decode_answers, generate_ids

    inputs, _ = model_inputs(loaded, frames, prompts)
    inputs.pop("position_ids", None)  # generate derives them from the mask itself
    # generate samples from torch's global RNG; seed it from the run's generator so rollouts
    # are reproducible without touching the caller's RNG stream elsewhere.
    torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
    # top_k/top_p off: sample from the full softmax, the distribution score_turns evaluates.
    ids = generate_ids(
        loaded,
        inputs,  # type: ignore[arg-type]
        max_new_tokens=spec.max_new_tokens,
        do_sample=True,
        temperature=spec.temperature,
        top_k=0,
        top_p=1.0,
    ).cpu()
    eos = loaded.model.generation_config.eos_token_id
    is_eos = torch.isin(ids, torch.tensor(eos if isinstance(eos, list) else [eos]))
    # Score every token up to and including the first end-of-turn; the padding after it is not
    # the policy's choice.
    ended_before = (is_eos.long().cumsum(1) - is_eos.long()) > 0
    mask = (~ended_before).float()
    return Answers(decode_answers(loaded, ids), ids, mask)
