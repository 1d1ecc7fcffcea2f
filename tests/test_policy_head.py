"""One policy head for evaluation and training: the evaluated policy is the trained one.

Real tiny VLMs with LoRA, real NumberLine environments. The LoRA ``B`` matrices are set to random
values first, so the policy differs from the base model: an evaluator that acted with the base
weights, or a trainer with its own head, would pick other actions or score them differently.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from mmrl_harness.evaluate import resolve_task
from mmrl_harness.models.generation import build_inputs
from mmrl_harness.rollout import VLMPolicy, run_episodes
from mmrl_harness.tasks import make_task_env

#: 5-position NumberLine, 32-px frames, episodes of at most 4 turns (so they end unevenly).
LINE = {"env_kwargs.image_size": 32, "max_steps": 4}


@pytest.fixture(autouse=True)
def one_torch_thread() -> Any:
    """One thread: on small shared CPUs, torch's thread pool slows sharply under contention."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _trained_policy(tmp_path: Path, model_name: str) -> Any:
    """A LoRA policy whose adapter is not the identity (random ``B``, as after training)."""
    from mmrl_harness.train.config import train_config_from_dict
    from mmrl_harness.train.policy import build_policy

    config = train_config_from_dict(
        {
            "model": model_name,
            "task": "numberline",
            "task_overrides": LINE,
            "algorithm": "ppo",
            "output_dir": str(tmp_path / "run"),
            "per_device_batch_size": 6,
        }
    )
    policy = build_policy(config)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in policy.peft_model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 2.0)
    return policy


def _greedy_training_rollout(policy: Any, mode: str) -> tuple[Any, Any, list[int]]:
    """Whole greedy episodes from the training collector; returns the spec, rollout, seeds."""
    from mmrl_harness.train.episodic.policy import ActorCritic, ValueHead, hidden_size, policy_spec
    from mmrl_harness.train.episodic.rollout import EnvPool, collect_episodes

    task = resolve_task("numberline", LINE)
    pool = EnvPool([make_task_env(task) for _ in range(6)])
    loaded = policy.vlm
    spec = policy_spec(loaded, mode, pool.envs[0].action_words, 1.0, 3, do_sample=False)
    model = ActorCritic(policy.peft_model, ValueHead(hidden_size(policy.peft_model)))
    try:
        rollout = collect_episodes(
            pool,
            model,
            loaded,
            spec,
            group_size=1,
            seeds=np.random.default_rng(0),
            seed_pool=range(1000),
            generator=torch.Generator().manual_seed(0),
        )
    finally:
        pool.close()
    return spec, rollout, list(pool.seeds)


@pytest.mark.parametrize("model_name", ["tiny-llava", "tiny-qwen2-vl"])
def test_greedy_training_acts_and_scores_like_greedy_evaluation(
    tmp_path: Path, model_name: str
) -> None:
    policy = _trained_policy(tmp_path, model_name)
    spec, rollout, seeds = _greedy_training_rollout(policy, "action_logits")
    loaded = policy.vlm
    task = resolve_task("numberline", LINE)
    evaluator = VLMPolicy(loaded, mode="action_logits")  # what `mmrl eval` and eval_every run
    records = run_episodes(lambda: make_task_env(task), evaluator, seeds, batch_size=len(seeds))

    # 1. The same answers, turn by turn, in every episode (and so the same rewards).
    ids = rollout.episode_ids.tolist()
    per_episode = [[r for r in range(len(rollout)) if ids[r] == i] for i in range(len(seeds))]
    for i, record in enumerate(records):
        assert [rollout.answers.texts[r] for r in per_episode[i]] == record.responses
        assert rollout.rewards[per_episode[i]].tolist() == record.rewards
    assert {a for r in records for a in r.actions} == {"left", "right"}  # not a constant policy
    # Training keeps its episodes with evaluation's bookkeeping: the very same records.
    trained = sorted(rollout.episodes, key=lambda r: r.episode_index)
    assert [_timeless(r) for r in trained] == [_timeless(r) for r in records]
    assert len({r.length for r in records}) > 1  # episodes ended at different turns

    # 2. The training log-probability of each chosen action is the evaluation head's
    #    log-softmax score for it. Re-scored in the very batches the collector acted in (turn t:
    #    the episodes still running, in environment order): same batch shapes and the same
    #    forward, so the float32 arithmetic is identical and the numbers are equal exactly.
    words = spec.action_words
    turns = max(len(rows) for rows in per_episode)
    for t in range(turns):
        rows = [rows[t] for rows in per_episode if len(rows) > t]
        frames = [_pil(rollout.frames[r]) for r in rows]
        inputs = build_inputs(loaded, frames, [rollout.prompts[r] for r in rows])
        logp = torch.log_softmax(evaluator.action_scores(inputs, words), dim=-1).cpu()
        chosen = rollout.answers.actions[rows]
        assert [words[int(a)] for a in logp.argmax(-1)] == [words[int(a)] for a in chosen]
        assert torch.equal(logp.gather(1, chosen[:, None]).squeeze(1), rollout.logprobs[rows])

    # 3. All turns in one batch: other left padding, the same head up to float32 rounding of
    #    reordered sums (~1e-6 on log-probabilities of order 1); 1e-5 leaves a 10x margin, while
    #    another model or head moves them by far more (the base model, below).
    inputs = build_inputs(loaded, [_pil(f) for f in rollout.frames], rollout.prompts)
    logp = torch.log_softmax(evaluator.action_scores(inputs, words), dim=-1).cpu()
    again = logp.gather(1, rollout.answers.actions[:, None]).squeeze(1)
    torch.testing.assert_close(again, rollout.logprobs, rtol=0, atol=1e-5)
    with policy.peft_model.disable_adapter():  # the untrained model: what the test must tell apart
        logp = torch.log_softmax(evaluator.action_scores(inputs, words), dim=-1).cpu()
    base = logp.gather(1, rollout.answers.actions[:, None]).squeeze(1)
    assert (base - rollout.logprobs).abs().max() > 1e-3  # 100x the rounding bound above


def test_greedy_training_generates_the_text_greedy_evaluation_generates(tmp_path: Path) -> None:
    policy = _trained_policy(tmp_path, "tiny-llava")
    _, rollout, seeds = _greedy_training_rollout(policy, "generate")
    task = resolve_task("numberline", LINE)
    evaluator = VLMPolicy(policy.vlm, mode="generate", max_new_tokens=3)
    records = run_episodes(lambda: make_task_env(task), evaluator, seeds, batch_size=len(seeds))
    ids = rollout.episode_ids.tolist()
    for i, record in enumerate(records):
        assert [rollout.answers.texts[r] for r in range(len(rollout)) if ids[r] == i] == (
            record.responses
        )
    assert torch.isfinite(rollout.logprobs).all()  # training also scored what it generated


def _timeless(record: Any) -> dict[str, Any]:
    return record.model_dump(exclude={"wall_time_s"})  # type: ignore[no-any-return]


def _pil(frame: np.ndarray) -> Any:
    from PIL import Image

    return Image.fromarray(frame)


@pytest.mark.parametrize("model_name", ["tiny-llava", "tiny-qwen2-vl"])
def test_kept_processor_output_rebatches_to_what_the_processor_returns(
    request: pytest.FixtureRequest, model_name: str
) -> None:
    """The update re-batches the processor output kept while acting instead of running the
    processor again: any selection of turns, in any order, gives the processor's own batch."""
    from mmrl_harness.policy_head import prompt_inputs, split_turns

    loaded = request.getfixturevalue("tiny_llava" if model_name == "tiny-llava" else "tiny_qwen")
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(5)]
    # Prompts of different lengths, so every batch is left-padded differently.
    prompts = ["Left or right?", "Where is the target? Answer left or right.", "Go.", "a b c", "?"]
    processed = split_turns(loaded, prompt_inputs(loaded, frames, prompts))
    assert processed is not None and len(processed) == 5
    for rows in ([3, 0, 2], [1], [4, 3, 2, 1, 0], [2, 4]):
        got = processed.select(rows).batch(loaded.device, loaded.model.dtype)
        want = prompt_inputs(loaded, [frames[i] for i in rows], [prompts[i] for i in rows])
        assert got.keys() == want.keys()
        for key in want:  # the same tensors: values, dtype and shape (padding included)
            assert got[key].dtype == want[key].dtype, key
            assert torch.equal(got[key], want[key]), key


@pytest.mark.parametrize(
    ("model_name", "mode"),
    [
        ("tiny-llava", "action_logits"),
        ("tiny-qwen2-vl", "action_logits"),
        ("tiny-llava", "generate"),
    ],
)
def test_scoring_from_the_kept_inputs_equals_recomputing_them(
    tmp_path: Path, model_name: str, mode: str
) -> None:
    """The rollout keeps every turn's processor output; scoring a shuffled minibatch from it
    gives exactly what running the processor on the turns' frames and prompts gives."""
    from mmrl_harness.train.episodic.policy import ActorCritic, ValueHead, hidden_size, score_turns

    policy = _trained_policy(tmp_path, model_name)
    spec, rollout, _ = _greedy_training_rollout(policy, mode)
    assert rollout.processed is not None and len(rollout.processed) == len(rollout)
    model = ActorCritic(policy.peft_model, ValueHead(hidden_size(policy.peft_model)))
    rows = torch.randperm(len(rollout), generator=torch.Generator().manual_seed(0))[:9]
    frames = [rollout.frames[int(i)] for i in rows]
    prompts = [rollout.prompts[int(i)] for i in rows]
    answers = rollout.answers.select(rows)
    with torch.no_grad():
        kept = score_turns(
            model, policy.vlm, spec, frames, prompts, answers, rollout.processed.select(rows)
        )
        recomputed = score_turns(model, policy.vlm, spec, frames, prompts, answers)
    # Identical input tensors (the test above) run the identical float32 computation, so the
    # results are equal exactly, not merely close.
    assert torch.equal(kept.logprobs, recomputed.logprobs)
    assert torch.equal(kept.entropy, recomputed.entropy)
    assert torch.equal(kept.values, recomputed.values)
    assert kept.tokens == recomputed.tokens
    # And they are the acting log-probabilities (other batch shapes: float32 rounding, ~1e-6).
    torch.testing.assert_close(kept.logprobs, rollout.logprobs[rows], rtol=0, atol=1e-5)


class _RowCounter:
    """The actor-critic, recording how many rows each forward pass ran on."""

    def __init__(self, model: Any) -> None:
        self.model, self.rows = model, []  # type: list[int]

    def __call__(self, inputs: dict[str, torch.Tensor], keep: int) -> Any:
        self.rows.append(int(inputs["input_ids"].shape[0]))
        return self.model(inputs, keep)


@pytest.mark.parametrize(
    ("model_name", "mode"),
    [
        ("tiny-llava", "action_logits"),
        ("tiny-qwen2-vl", "action_logits"),
        ("tiny-llava", "generate"),
    ],
)
def test_repeated_turns_are_scored_once_with_the_same_numbers_and_gradient(
    tmp_path: Path, model_name: str, mode: str
) -> None:
    """A minibatch that repeats turns runs the forward on its distinct turns only; every turn
    gets the log-probability, entropy and value a forward over all its turns gives, and the
    gradient is the same (each repeat's share summed onto the one row)."""
    from mmrl_harness.train.episodic.policy import ActorCritic, ValueHead, hidden_size, score_turns

    policy = _trained_policy(tmp_path, model_name)
    spec, rollout, _ = _greedy_training_rollout(policy, mode)
    assert rollout.processed is not None
    model = ActorCritic(policy.peft_model, ValueHead(hidden_size(policy.peft_model)))
    a, b, c, d = rollout.processed.distinct()[0][:4]  # four turns with different inputs
    rows = torch.tensor([a, b, a, c, b, a, d])  # two of them repeated: 4 distinct of 7
    frames = [rollout.frames[int(i)] for i in rows]
    prompts = [rollout.prompts[int(i)] for i in rows]
    answers = rollout.answers.select(rows)
    lora = [p for n, p in policy.peft_model.named_parameters() if "lora_" in n]

    def scored(processed: Any) -> tuple[Any, list[torch.Tensor], list[int]]:
        counter = _RowCounter(model)
        scores = score_turns(counter, policy.vlm, spec, frames, prompts, answers, processed)
        loss = scores.logprobs.sum() + scores.entropy.sum() + scores.values.sum()
        grads = torch.autograd.grad(loss, lora)
        return scores, list(grads), counter.rows

    once, grad_once, rows_once = scored(rollout.processed.select(rows))
    every, grad_every, rows_every = scored(None)  # the processor on all 7 turns, 7 rows
    assert rows_once == [4] and rows_every == [7]
    # A row's output does not depend on the other rows of its batch, and the distinct turns
    # are padded to the same width (the longest turn is among them): float32 rounding at most
    # (~1e-6 on values of order 1; equal on CPU in practice).
    for name in ("logprobs", "entropy", "values"):
        torch.testing.assert_close(getattr(once, name), getattr(every, name), rtol=0, atol=1e-5)
    assert once.tokens == every.tokens
    # The shared row's gradient sums its repeats in another order: float32 rounding relative
    # to each gradient's size (1e-4 of the largest entry, a 100x margin over ~1e-6).
    for a, b in zip(grad_once, grad_every, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-4 * float(b.abs().max()) + 1e-12)
    assert any(float(g.abs().max()) > 0 for g in grad_every)  # a gradient that could differ


def test_a_rollout_memo_runs_each_observation_once_and_returns_what_a_forward_returns(
    tmp_path: Path,
) -> None:
    """``TurnMemo``: observations repeated within and across calls run the processor and the
    model once; the logits, values and kept processor output are a plain forward's."""
    from mmrl_harness.policy_head import prompt_inputs, with_answers
    from mmrl_harness.train.episodic.policy import ActorCritic, ValueHead, hidden_size
    from mmrl_harness.turn_memo import TurnMemo

    policy = _trained_policy(tmp_path, "tiny-llava")
    loaded = policy.vlm
    model = ActorCritic(policy.peft_model, ValueHead(hidden_size(policy.peft_model)))
    torch.nn.init.normal_(model.value_head.net[2].weight)  # a value head that is not 0
    rng = np.random.default_rng(0)
    seen = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(3)]
    prompts = ["Left or right?", "Go.", "Left or right?", "Go.", "Left or right?"]
    frames = [seen[0], seen[1], seen[0], seen[1], seen[2]]  # 3 distinct (frame, prompt) pairs
    columns = (5, 11)  # the vocabulary ids whose logits it keeps (the action words' in training)
    memo = TurnMemo(columns)
    with torch.no_grad():
        first = memo.forward(model, loaded, frames, prompts)
        assert first is not None and memo.forwarded == 3
        again = memo.forward(model, loaded, frames[::-1], prompts[::-1])  # all seen: no forward
        assert again is not None and memo.forwarded == 3
        raw = prompt_inputs(loaded, frames, prompts)
        logits, values = model(*with_answers(loaded, raw))
        logits = logits[:, :, list(columns)]
    # Another batch (3 rows, not 5) and its own left padding: float32 rounding (~1e-6).
    torch.testing.assert_close(first.logits, logits, rtol=0, atol=1e-5)
    torch.testing.assert_close(first.values, values, rtol=0, atol=1e-5)
    torch.testing.assert_close(again.logits, logits.flip(0), rtol=0, atol=1e-5)
    assert first.tokens == int(raw["attention_mask"].sum())
    # The kept processor output re-batches to the processor's own batch of all five turns.
    batch = first.processed.batch(loaded.device, loaded.model.dtype)
    assert all(torch.equal(batch[k], raw[k]) for k in raw)
    # Repeated turns share a key; distinct ones do not.
    assert first.processed.distinct()[1].tolist() == [0, 1, 0, 1, 2]


def test_acting_through_a_rollout_memo_answers_and_scores_as_acting_without_it(
    tmp_path: Path,
) -> None:
    """``act_turn`` with a ``TurnMemo`` (the action words' columns only) samples the same
    answers from the same noise and records the same scores and processor output."""
    from mmrl_harness.policy_head import act_turn, policy_spec
    from mmrl_harness.train.episodic.policy import ActorCritic, ValueHead, hidden_size
    from mmrl_harness.turn_memo import TurnMemo

    policy = _trained_policy(tmp_path, "tiny-llava")
    loaded = policy.vlm
    model = ActorCritic(policy.peft_model, ValueHead(hidden_size(policy.peft_model)))
    torch.nn.init.normal_(model.value_head.net[2].weight)  # a value head that is not 0
    spec = policy_spec(loaded, "action_logits", ("left", "right"), 1.0, 3)
    env = make_task_env(resolve_task("numberline", LINE))
    observations = [env.reset(seed=seed) for seed in (0, 1, 2, 0, 1, 3)]  # 2 repeated
    frames, prompts = [o.image for o in observations], [o.text for o in observations]
    memo = TurnMemo(spec.action_ids)
    for _ in range(2):  # the second time every observation comes from the memo
        with_memo = act_turn(model, loaded, spec, frames, prompts, _noise(), memo=memo)
        plain = act_turn(model, loaded, spec, frames, prompts, _noise())
        assert with_memo[0].texts == plain[0].texts
        assert torch.equal(with_memo[0].actions, plain[0].actions)
        got, want = with_memo[1], plain[1]
        assert got is not None and want is not None
        assert got.processed is not None and want.processed is not None
        # Rows computed in a batch of the distinct observations: float32 rounding (~1e-6).
        for name in ("logprobs", "entropy", "values"):
            torch.testing.assert_close(getattr(got, name), getattr(want, name), rtol=0, atol=1e-5)
        assert got.tokens == want.tokens and got.processed.keys == want.processed.keys
    assert memo.forwarded == len(set(got.processed.keys)) < len(frames)


def _noise() -> torch.Generator:
    return torch.Generator().manual_seed(0)
