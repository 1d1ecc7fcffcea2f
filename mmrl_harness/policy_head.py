"""The one policy head: how a VLM answers a batch of turns, for evaluation and training alike.

Evaluation (``rollout.VLMPolicy`` driven by ``rollout.run_episodes``) and the episodic trainers
(``train/episodic/rollout.py``) both act through ``act_turn`` and nothing else, so the policy
that is evaluated is the one that is trained by construction:

- ``turn_inputs`` is the one input builder: ``build_inputs`` on each turn's own frame and
  prompt, position ids that skip left padding, and (when scoring a generated answer) the answer
  tokens appended; given the turns' processor output kept while acting (``ProcessedTurns``,
  ``TurnScores.processed``) it re-batches that instead of running the processor again;
- ``answer_scores`` is the one head: the action words' logits at the answer position
  (``action_logits``), or every token's logits with the suppressed tokens masked (``generate``),
  divided by the temperature;
- ``act_turn`` picks the answers (greedy or sampled) and, for training, also records what the
  update needs: the log-probability of each answer, its entropy and the value-head output.

The model is anything called as ``model(inputs, logits_to_keep) -> (logits, values or None)``:
``LogitsOnly(loaded.model)`` for evaluation, the trainers' actor-critic (the same PEFT model plus
a value head) for training.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn

    from mmrl_harness.models.loading import LoadedVLM
    from mmrl_harness.processed_turns import ProcessedTurns
    from mmrl_harness.turn_memo import TurnMemo

PolicyMode = Literal["generate", "action_logits"]


class TurnModel(Protocol):
    """A forward pass over turn inputs: the last ``logits_to_keep`` logits and the values."""

    def __call__(
        self, inputs: dict[str, torch.Tensor], logits_to_keep: int
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(logits, values)``; ``values`` is ``None`` without a value head."""
        ...


class LogitsOnly:
    """A plain VLM as a ``TurnModel``: logits, no value head (evaluation)."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def __call__(
        self, inputs: dict[str, torch.Tensor], logits_to_keep: int
    ) -> tuple[torch.Tensor, None]:
        """The model's logits of the last ``logits_to_keep`` positions."""
        from mmrl_harness.fusion.image_context import completion_boundary

        with completion_boundary(self.model, prompt_length(inputs, logits_to_keep)):
            out = self.model(**inputs, logits_to_keep=logits_to_keep)
        return out.logits, None


def prompt_length(inputs: dict[str, torch.Tensor], logits_to_keep: int) -> int:
    """Where the answer starts in ``turn_inputs``' sequences: the answer tokens are the last
    ``logits_to_keep - 1`` positions (none in ``action_logits`` mode, where the keep is 1)."""
    return int(inputs["input_ids"].shape[1]) - logits_to_keep + 1


@dataclass(frozen=True)
class PolicySpec:
    """How the policy acts: the mode, the action words' token ids, sampling settings."""

    mode: str
    action_words: tuple[str, ...]
    action_ids: tuple[int, ...]  # action_logits: token id of each action word
    suppressed_ids: tuple[int, ...]  # generate: ids never sampled (pad, roles, image tokens)
    temperature: float
    max_new_tokens: int
    do_sample: bool = True  # False: greedy (argmax / greedy decoding)


def action_token_ids(loaded: LoadedVLM, action_words: Sequence[str]) -> list[int]:
    """The single token id of each action word; an error when a word is not exactly one token."""
    if not action_words:
        raise ValueError(
            "policy mode 'action_logits' needs a task with action words (a multi-turn task or a "
            "single-turn task with an `actions:` list); use mode 'generate' for free-text answers"
        )
    tokenizer = loaded.tokenizer
    ids = []
    for word in action_words:
        pieces = tokenizer(word, add_special_tokens=False)["input_ids"]
        if len(pieces) != 1 or pieces[0] == tokenizer.unk_token_id:
            raise ValueError(
                f"action word {word!r} is {len(pieces)} token(s) {pieces} for this tokenizer; "
                "policy mode 'action_logits' needs every action word to be one known token "
                "(use mode 'generate')"
            )
        ids.append(int(pieces[0]))
    return ids


def policy_spec(
    loaded: LoadedVLM,
    mode: str,
    action_words: Sequence[str],
    temperature: float,
    max_new_tokens: int,
    do_sample: bool = True,
) -> PolicySpec:
    """Resolve token ids once per run; errors name the word that is not a single token."""
    action_ids = tuple(action_token_ids(loaded, action_words)) if mode == "action_logits" else ()
    gen = loaded.model.generation_config
    suppressed = tuple(
        int(i) for i in (getattr(gen, "suppress_tokens", None) or []) if i is not None
    )
    return PolicySpec(
        mode, tuple(action_words), action_ids, suppressed, temperature, max_new_tokens, do_sample
    )


@dataclass
class Answers:
    """What the policy answered on a batch of turns (on CPU, one row per turn)."""

    texts: list[str]  # what the environment is stepped with
    actions: torch.Tensor  # action_logits: (B,) index into the action words; generate: (B, G) ids
    mask: torch.Tensor  # generate: (B, G) 1 on generated tokens; action_logits: (B, 1) ones

    def select(self, rows: Sequence[int] | torch.Tensor) -> Answers:
        """The answers of the given rows."""
        import torch

        index = torch.as_tensor(rows, dtype=torch.long)
        return Answers([self.texts[int(i)] for i in index], self.actions[index], self.mask[index])

    @staticmethod
    def concat(parts: Sequence[Answers]) -> Answers:
        """One ``Answers`` of all rows (generate mode pads ids to the longest answer)."""
        import torch

        width = max(p.mask.shape[1] for p in parts)

        def pad(t: torch.Tensor, value: int) -> torch.Tensor:
            if t.ndim == 1 or t.shape[1] == width:
                return t
            return torch.nn.functional.pad(t, (0, width - t.shape[1]), value=value)

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
    values: torch.Tensor  # (B,) value head output (zeros without a value head)
    tokens: int  # tokens processed (prompt + image + answer), for throughput
    # The turns' processor output, kept by act_turn so the update need not run it again.
    processed: ProcessedTurns | None = None


def turn_inputs(
    loaded: LoadedVLM,
    frames: Sequence[np.ndarray],
    prompts: Sequence[str],
    answers: Answers | None = None,
    spec: PolicySpec | None = None,
    processed: ProcessedTurns | None = None,
) -> tuple[dict[str, torch.Tensor], int]:
    """``build_inputs`` on each turn's own frame, plus the answer tokens in generate mode.

    Returns the inputs and ``logits_to_keep``. Position ids follow the attention mask (as in
    ``generate``) so a turn scores the same whatever the left padding of the batch it is in.
    ``processed`` (these turns' processor output, kept while acting) stands in for running the
    processor again: the same tensors, re-batched.
    """
    if processed is not None:
        inputs = processed.batch(loaded.device, loaded.model.dtype)
    else:
        inputs = prompt_inputs(loaded, frames, prompts)
    return with_answers(loaded, inputs, answers, spec)


def prompt_inputs(
    loaded: LoadedVLM, frames: Sequence[np.ndarray], prompts: Sequence[str]
) -> dict[str, torch.Tensor]:
    """The processor's batch for these turns (``build_inputs`` on each turn's own frame)."""
    from PIL import Image

    from mmrl_harness.models.generation import build_inputs

    return dict(build_inputs(loaded, [Image.fromarray(f) for f in frames], list(prompts)))


def with_answers(
    loaded: LoadedVLM,
    inputs: dict[str, torch.Tensor],
    answers: Answers | None = None,
    spec: PolicySpec | None = None,
) -> tuple[dict[str, torch.Tensor], int]:
    """Prompt inputs made ready for a forward: the answer tokens appended in generate mode,
    position ids added; and ``logits_to_keep``."""
    import torch

    from mmrl_harness.models.generation import add_position_ids

    inputs = dict(inputs)
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


def split_turns(loaded: LoadedVLM, inputs: dict[str, torch.Tensor]) -> ProcessedTurns | None:
    """Keep a processor batch per turn for ``turn_inputs(processed=...)`` (``None``: cannot)."""
    from mmrl_harness.processed_turns import ProcessedTurns

    pad_id = loaded.tokenizer.pad_token_id
    return None if pad_id is None else ProcessedTurns.split(inputs, int(pad_id))


def answer_scores(spec: PolicySpec, logits: torch.Tensor) -> torch.Tensor:
    """The head: float32 scores / temperature the policy's softmax is over.

    ``action_logits``: ``(B, len(action_words))``, the action words at the answer position.
    ``generate``: ``(B, G, vocab)`` at the answer tokens' positions, suppressed ids at -inf.
    """
    if spec.mode == "action_logits":
        return logits[:, -1, list(spec.action_ids)].float() / spec.temperature
    return _masked(logits[:, :-1, :].float() / spec.temperature, spec.suppressed_ids)


def _masked(scores: torch.Tensor, suppressed: Sequence[int]) -> torch.Tensor:
    """``scores`` with the suppressed ids at -inf (probability 0)."""
    if not suppressed:
        return scores
    scores = scores.clone()
    scores[..., list(suppressed)] = float("-inf")
    return scores


def score_answers(
    spec: PolicySpec,
    logits: torch.Tensor,
    values: torch.Tensor | None,
    answers: Answers,
    tokens: int,
) -> TurnScores:
    """Log-probabilities and entropies of ``answers`` under ``logits`` (differentiable)."""
    import torch

    device = logits.device
    scores = answer_scores(spec, logits)
    logp_all = torch.log_softmax(scores, dim=-1)
    if values is None:
        values = torch.zeros(len(logits), device=device)
    if spec.mode == "action_logits":
        logprobs = logp_all.gather(1, answers.actions.to(device)[:, None]).squeeze(1)
        entropy = -(logp_all.exp() * logp_all).sum(-1)
        return TurnScores(logprobs, entropy, values, tokens)
    ids, mask = answers.actions.to(device), answers.mask.to(device, scores.dtype)
    token_logp = logp_all.gather(2, ids[:, :, None]).squeeze(2)
    # where, not a product: padding after the end of turn is a suppressed id (-inf), and
    # 0 * -inf would be nan.
    logprobs = torch.where(mask > 0, token_logp, 0.0).sum(1)
    # Suppressed tokens have probability 0 and log-probability -inf: 0 * -inf must be 0.
    token_entropy = -(logp_all.exp() * logp_all.nan_to_num(neginf=0.0)).sum(-1)
    entropy = (token_entropy * mask).sum(1) / mask.sum(1).clamp(min=1)
    return TurnScores(logprobs, entropy, values, tokens)


def score_turns(
    model: TurnModel,
    loaded: LoadedVLM,
    spec: PolicySpec,
    frames: Sequence[np.ndarray],
    prompts: Sequence[str],
    answers: Answers,
    processed: ProcessedTurns | None = None,
) -> TurnScores:
    """Log-probabilities, entropies and values of ``answers`` on these turns (differentiable).

    ``processed``: the turns' processor output kept while acting (``TurnScores.processed``);
    the same inputs as running the processor on ``frames`` and ``prompts`` again, cheaper. With
    it, turns that are the same model input (same tensors; in generate mode also the same
    answer tokens) share one row of the forward pass: each turn's outputs are its distinct
    turn's row, the same numbers a forward over every turn gives (a row's output does not
    depend on the other rows, and the padding width is the same), and the gradient of the
    shared row is the sum over its turns, as it is for shared weights. ``tokens`` still counts
    every turn's tokens.
    """
    if processed is not None:
        extra = None
        if spec.mode == "generate":
            extra = [
                a.numpy().tobytes() + m.numpy().tobytes()
                for a, m in zip(answers.actions, answers.mask, strict=True)
            ]
        first, inverse = processed.distinct(extra)
        if len(first) < len(processed):
            inputs, keep = with_answers(
                loaded,
                processed.select(first).batch(loaded.device, loaded.model.dtype),
                answers.select(first),
                spec,
            )
            logits, values = model(inputs, keep)
            index = inverse.to(logits.device)
            tokens = int(inputs["attention_mask"].sum(1)[index].sum())
            values = None if values is None else values[index]
            return score_answers(spec, logits[index], values, answers, tokens)
    inputs, keep = turn_inputs(loaded, frames, prompts, answers, spec, processed)
    logits, values = model(inputs, keep)
    return score_answers(spec, logits, values, answers, int(inputs["attention_mask"].sum()))


def pick(scores: torch.Tensor, do_sample: bool, generator: torch.Generator | None) -> torch.Tensor:
    """Indices into the last dimension: the argmax, or a draw from the softmax.

    With a ``generator`` the draw is on CPU from it (training: keyed per update); without one it
    uses torch's global RNG (evaluation: seeded once per rollout by ``VLMPolicy.reseed``).
    """
    import torch

    if not do_sample:
        return scores.argmax(dim=-1).cpu()
    probs = torch.softmax(scores, dim=-1)
    if generator is None:
        return torch.multinomial(probs, 1).squeeze(1).cpu()
    return torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(1)


def act_turn(
    model: TurnModel,
    loaded: LoadedVLM,
    spec: PolicySpec,
    frames: Sequence[np.ndarray],
    prompts: Sequence[str],
    generator: torch.Generator | None = None,
    *,
    record: bool = True,
    memo: TurnMemo | None = None,
) -> tuple[Answers, TurnScores | None]:
    """One answer per turn (greedy or sampled per ``spec``), scored when ``record``.

    With ``record`` the scores are exactly what ``score_turns`` computes in the update: in
    ``action_logits`` mode one forward both picks the action and scores it; in ``generate`` mode
    the sampled text is re-scored with its tokens appended. Without it (evaluation) generate
    mode skips that second forward and the scores are ``None``.

    ``memo`` (``action_logits`` mode, weights unchanged since it was made): the prompt forward
    of an observation it has seen is taken from it, not run again (``turn_memo``).
    """
    import torch

    with torch.no_grad():
        if memo is not None and spec.mode == "action_logits" and memo.columns == spec.action_ids:
            ahead = memo.forward(model, loaded, frames, prompts)
            if ahead is not None:
                # The memo keeps the action words' columns only: column i is action word i.
                kept = replace(spec, action_ids=tuple(range(len(spec.action_ids))))
                return _answer(
                    kept,
                    ahead.logits,
                    ahead.values,
                    generator,
                    record,
                    ahead.tokens,
                    ahead.processed,
                )
        return _act_turn(model, loaded, spec, frames, prompts, generator, record)


def _act_turn(
    model: TurnModel,
    loaded: LoadedVLM,
    spec: PolicySpec,
    frames: Sequence[np.ndarray],
    prompts: Sequence[str],
    generator: torch.Generator | None,
    record: bool,
) -> tuple[Answers, TurnScores | None]:
    if spec.mode == "generate":
        raw = prompt_inputs(loaded, frames, prompts)
        answers = _generate(loaded, spec, raw, generator)
        if not record:
            return answers, None
        processed = split_turns(loaded, raw)
        scores = score_turns(model, loaded, spec, frames, prompts, answers, processed)
        scores.processed = processed
        return answers, scores
    if spec.mode != "action_logits":
        raise ValueError(f"unknown policy mode {spec.mode!r}; use 'generate' or 'action_logits'")
    raw = prompt_inputs(loaded, frames, prompts)
    inputs, keep = with_answers(loaded, raw)
    logits, values = model(inputs, keep)
    tokens = int(inputs["attention_mask"].sum())
    return _answer(spec, logits, values, generator, record, tokens, raw, loaded)


def _answer(
    spec: PolicySpec,
    logits: torch.Tensor,
    values: torch.Tensor | None,
    generator: torch.Generator | None,
    record: bool,
    tokens: int,
    processed: ProcessedTurns | dict[str, torch.Tensor],
    loaded: LoadedVLM | None = None,
) -> tuple[Answers, TurnScores | None]:
    """``action_logits`` mode: pick from the prompt forward's logits and score the picks;
    ``processed`` is the kept processor output, or the raw batch to split (with ``loaded``)."""
    import torch

    picks = pick(answer_scores(spec, logits), spec.do_sample, generator)
    answers = Answers([spec.action_words[int(i)] for i in picks], picks, torch.ones(len(picks), 1))
    if not record:
        return answers, None
    scores = score_answers(spec, logits, values, answers, tokens)
    if isinstance(processed, dict):
        assert loaded is not None  # a raw batch is split with its tokenizer's pad id
        scores.processed = split_turns(loaded, processed)
    else:
        scores.processed = processed
    return answers, scores


def _generate(
    loaded: LoadedVLM,
    spec: PolicySpec,
    inputs: dict[str, torch.Tensor],
    generator: torch.Generator | None,
) -> Answers:
    import torch

    from mmrl_harness.models.generation import decode_answers, generate_ids

    # No position ids: generate derives them from the mask itself.
    kwargs: dict[str, Any] = {}
    if spec.do_sample:
        if generator is not None:
            # generate samples from torch's global RNG; seed it from the caller's generator so
            # rollouts are reproducible without touching the caller's RNG stream elsewhere.
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
        # top_k/top_p off: sample from the full softmax, the distribution score_answers scores.
        kwargs = {"temperature": spec.temperature, "top_k": 0, "top_p": 1.0}
    ids = generate_ids(
        loaded,
        inputs,  # type: ignore[arg-type]
        max_new_tokens=spec.max_new_tokens,
        do_sample=spec.do_sample,
        **kwargs,
    ).cpu()
    eos = loaded.model.generation_config.eos_token_id
    eos_ids = [] if eos is None else eos if isinstance(eos, list) else [eos]
    is_eos = torch.isin(ids, torch.tensor(eos_ids, dtype=ids.dtype))
    # Score every token up to and including the first end-of-turn; the padding after it is not
    # the policy's choice.
    ended_before = (is_eos.long().cumsum(1) - is_eos.long()) > 0
    mask = (~ended_before).float()
    return Answers(decode_answers(loaded, ids), ids, mask)
