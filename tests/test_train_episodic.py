"""The episodic trainers (PPO + GAE, group-relative episodes): losses, learning, frames, resume.

Real tiny VLMs and real environments throughout. The learning tests use NumberLine with three
positions and four turns, on which a few updates take greedy success from chance to >= 0.8.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from mmrl_harness.train.losses.grpo import group_relative_advantages
from mmrl_harness.train.losses.ppo import compute_gae

# A NumberLine small enough that a few updates solve it (distance 1 or 2 from the target).
SHORT_LINE = {"env_kwargs.image_size": 32, "env_kwargs.line_length": 3, "max_steps": 4}


@pytest.fixture(autouse=True)
def one_torch_thread() -> Any:
    """One thread: on small shared CPUs, torch's thread pool slows sharply under contention."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _config(tmp_path: Path, algorithm: str = "ppo", **overrides: Any) -> Any:
    from mmrl_harness.train.config import train_config_from_dict

    episodic = {"rollout_steps": 8, "num_minibatches": 2, "eval_every": 0, "eval_episodes": 16}
    episodic.update(overrides.pop("episodic", {}))
    data = {
        "model": "tiny-llava",
        # Random end to end, like examples/ppo_numberline_tiny.yaml: the vision tower must learn.
        "lora": {"target_modules": "all-linear"},
        "task": "numberline",
        "task_overrides": SHORT_LINE,
        "algorithm": algorithm,
        "output_dir": str(tmp_path / "run"),
        "learning_rate": 1e-3,
        "per_device_batch_size": 8,
        "num_generations": 4,
        "max_steps": 2,
        "save_steps": 2,
        "seed": 0,
        "episodic": episodic,
        **overrides,
    }
    return train_config_from_dict(data)


def _train(config: Any) -> Any:
    from mmrl_harness.train.episodic.trainer import train_episodic
    from mmrl_harness.train.policy import build_policy

    return train_episodic(config, build_policy(config))


def _trainable_state(policy_model: Any) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in policy_model.named_parameters() if p.requires_grad}


def _mean(history: list[dict[str, float]], key: str, rows: slice) -> float:
    return float(np.mean([h[key] for h in history[rows]]))


# -- pure functions ----------------------------------------------------------------------------
def test_gae_matches_hand_computed_values_and_stops_at_episode_ends() -> None:
    rewards = torch.tensor([[0.0], [1.0], [0.0]])
    values = torch.tensor([[0.5], [0.5], [0.5]])
    dones = torch.tensor([[0.0], [1.0], [0.0]])
    adv, ret = compute_gae(rewards, values, dones, torch.tensor([2.0]), gamma=0.5, gae_lambda=0.5)
    # t=2: 0 + 0.5*2 - 0.5 = 0.5; t=1 (done): 1 - 0.5 = 0.5; t=0: (0 + 0.25 - 0.5) + 0.25*0.5
    assert adv.squeeze(1).tolist() == pytest.approx([-0.125, 0.5, 0.5])
    assert ret.squeeze(1).tolist() == pytest.approx([0.375, 1.0, 1.0])


def test_group_relative_advantages_centre_and_scale_each_group() -> None:
    returns = torch.tensor([1.0, -1.0, 3.0, 3.0])
    adv = group_relative_advantages(returns, torch.tensor([0, 0, 1, 1]), eps=0.0 + 1e-12)
    assert adv[:2].tolist() == pytest.approx([1.0, -1.0])
    assert adv[2:].tolist() == [0.0, 0.0]  # equal returns: no signal, not a division by zero


def test_episodic_config_rejects_unknown_and_out_of_range_options(tmp_path: Path) -> None:
    from mmrl_harness.train.config import TrainConfigError

    with pytest.raises(TrainConfigError, match=r"episodic\.clip_rang"):
        _config(tmp_path, episodic={"clip_rang": 0.2})
    with pytest.raises(TrainConfigError, match=r"episodic\.gamma"):
        _config(tmp_path, episodic={"gamma": 1.5})


# -- learning ----------------------------------------------------------------------------------
def test_ppo_raises_return_and_greedy_success_on_a_short_numberline(tmp_path: Path) -> None:
    config = _config(tmp_path, max_steps=12, episodic={"eval_every": 2})
    result = _train(config)
    history = result.log_history
    assert [h["step"] for h in history] == list(range(1, 13))
    assert _mean(history, "episode_return", slice(-3, None)) > _mean(
        history, "episode_return", slice(0, 3)
    )
    assert history[-1]["entropy"] < history[0]["entropy"]  # the policy commits
    assert result.evaluations[0]["success_rate"] < 0.7  # near chance before learning
    assert result.best_success_rate >= 0.8
    for key in ("value_loss", "clip_ratio", "approx_kl", "explained_variance", "reward_std"):
        assert np.isfinite(history[-1][key]), key
    assert history[-1]["tokens_per_s"] > 0 and history[-1]["peak_memory_mib"] > 0
    # keep_best: output_dir/best holds the best evaluation and is what the run returns with;
    # `mmrl eval --checkpoint` loads it like a TRL checkpoint and scores it the same.
    best = Path(config.output_dir) / "best"
    assert result.policy_checkpoint == result.best_checkpoint == best
    from mmrl_harness.evaluate import run_eval

    again = run_eval(
        "tiny-llava",
        ["numberline"],
        checkpoint=str(best),
        task_overrides=SHORT_LINE,
        episodes=16,
        policy_mode="action_logits",
    )
    assert again.tasks["numberline"].metrics["success_rate"].value == result.best_success_rate


def test_final_results_name_the_checkpoint_the_policy_in_memory_came_from(tmp_path: Path) -> None:
    from mmrl_harness.train import train

    # eval_every=1 with keep_best: the returned policy is output_dir/best, not the last save.
    config = _config(
        tmp_path, max_steps=2, save_steps=1, episodic={"eval_every": 1, "eval_episodes": 4}
    )
    config = config.model_copy(
        update={
            "eval": config.eval.model_copy(update={"episodes": 4, "policy_mode": "action_logits"})
        }
    )
    result = train(config)
    assert result.policy_checkpoint == Path(config.output_dir) / "best"
    assert result.results is not None
    assert result.results.provenance.fusion.checkpoint == str(result.policy_checkpoint)


def test_episodic_grpo_raises_return_on_a_short_numberline(tmp_path: Path) -> None:
    config = _config(
        tmp_path,
        "episodic_grpo",
        max_steps=14,
        per_device_batch_size=32,
        episodic={"eval_every": 7},
    )
    result = _train(config)
    history = result.log_history
    assert "value_loss" not in history[0]  # no critic: advantages are group-relative
    assert history[0]["episodes"] == 32  # one whole episode per environment each update
    assert _mean(history, "episode_return", slice(-3, None)) > _mean(
        history, "episode_return", slice(0, 3)
    )
    assert result.best_success_rate >= 0.8


def test_generate_mode_trains_on_sampled_free_text_with_a_kl_penalty(tmp_path: Path) -> None:
    config = _config(
        tmp_path,
        max_steps=2,
        max_new_tokens=3,
        episodic={"policy_mode": "generate", "kl_coef": 0.1},
    )
    history = _train(config).log_history
    for key in ("loss", "kl", "entropy", "value_loss", "approx_kl"):
        assert all(np.isfinite(h[key]) for h in history), key
    assert history[-1]["kl"] > 0  # the policy moved away from the LoRA-free reference
    assert history[0]["num_tokens"] > 0


# -- frames ------------------------------------------------------------------------------------
class RecordingEnv:
    """A real task environment that also keeps every image it hands out (the ground truth)."""

    def __init__(self, env: Any) -> None:
        self.env, self.task = env, env.task
        self.shown: list[np.ndarray] = []

    @property
    def action_words(self) -> tuple[str, ...]:
        return self.env.action_words  # type: ignore[no-any-return]

    @property
    def system_prompt(self) -> str | None:
        return self.env.system_prompt  # type: ignore[no-any-return]

    def reset(self, seed: int | None = None) -> Any:
        obs = self.env.reset(seed=seed)
        self.shown.append(obs.image.copy())
        return obs

    def step(self, text: str) -> Any:
        result = self.env.step(text)
        if not result.done:  # a finished episode's env is reset before acting again
            self.shown.append(result.observation.image.copy())
        return result

    def close(self) -> None:
        self.env.close()


def _rollout(
    tmp_path: Path, mode: str, steps: int = 3, model_name: str = "tiny-llava"
) -> tuple[Any, ...]:
    """A real PPO rollout on 5-position NumberLine from 4 recording environments."""
    from mmrl_harness.evaluate import resolve_task
    from mmrl_harness.tasks.gym_task import make_task_env
    from mmrl_harness.train.algorithms.ppo import PPO
    from mmrl_harness.train.episodic.config import EpisodicConfig
    from mmrl_harness.train.episodic.policy import ActorCritic, ValueHead, policy_spec
    from mmrl_harness.train.episodic.rollout import EnvPool, collect_steps
    from mmrl_harness.train.policy import build_policy

    config = _config(tmp_path, model=model_name, task_overrides={"env_kwargs.image_size": 32})
    policy = build_policy(config)
    task = resolve_task(config.task, config.task_overrides)
    envs = [RecordingEnv(make_task_env(task)) for _ in range(4)]
    loaded = policy.vlm
    spec = policy_spec(loaded, mode, envs[0].action_words, 1.0, 3)
    model = ActorCritic(policy.peft_model, ValueHead(64))
    rollout = collect_steps(
        EnvPool(envs),  # type: ignore[arg-type]
        model,
        loaded,
        spec,
        steps=steps,
        bootstrap=True,
        seeds=np.random.default_rng(0),
        seed_pool=range(100),
        generator=torch.Generator().manual_seed(0),
    )
    PPO().compute_advantages(rollout, config, EpisodicConfig(gamma=0.99, gae_lambda=0.95))
    return policy, loaded, spec, model, envs, rollout


def _optimize(
    model: Any, loaded: Any, spec: Any, rollout: Any, opts: Any, micro_batches: int = 1
) -> dict[str, float]:
    from accelerate import Accelerator

    from mmrl_harness.train.algorithms.ppo import PPO
    from mmrl_harness.train.episodic.update import optimize

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=1e-3)
    accelerator = Accelerator(cpu=True)
    return optimize(
        accelerator, model, optimizer, params, loaded, spec, rollout, opts, PPO(), micro_batches
    )


def test_each_turns_training_forward_sees_the_frame_acted_on(tmp_path: Path) -> None:
    from mmrl_harness.models.anatomy import get_submodule
    from mmrl_harness.models.generation import build_inputs
    from mmrl_harness.train.episodic.config import EpisodicConfig

    steps = 3
    policy, loaded, spec, model, envs, rollout = _rollout(tmp_path, "action_logits", steps)

    # 1. Turn t of env n stored the frame env n showed at turn t, and frames change over turns.
    for t in range(steps):
        for n, env in enumerate(envs):
            assert np.array_equal(rollout.frames[t * len(envs) + n], env.shown[t])
    moved = [not np.array_equal(rollout.frames[n], rollout.frames[len(envs) + n]) for n in range(4)]
    assert any(moved)  # so a forward on the episode's first frame would be caught

    # 2. The vision tower's input during the update is exactly those frames: every turn's in
    #    each epoch, and within a minibatch each distinct frame once (repeated turns share a
    #    row of the forward pass).
    seen: list[torch.Tensor] = []

    def record(_module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        seen.append((args[0] if args else kwargs["pixel_values"]).detach().clone())

    tower = get_submodule(policy.peft_model.get_base_model(), loaded.anatomy.vision_tower)
    hook = tower.register_forward_pre_hook(record, with_kwargs=True)
    opts = EpisodicConfig(ppo_epochs=2, num_minibatches=3)
    try:
        _optimize(model, loaded, spec, rollout, opts)
    finally:
        hook.remove()
    expected = build_inputs(loaded, [_pil(f) for f in rollout.frames], rollout.prompts)
    want = set(_rows(expected["pixel_values"]))
    assert len(seen) == opts.ppo_epochs * opts.num_minibatches  # one forward per minibatch
    for epoch in range(opts.ppo_epochs):
        calls = seen[epoch * opts.num_minibatches : (epoch + 1) * opts.num_minibatches]
        rows = [_rows(pixels) for pixels in calls]
        assert all(len(set(r)) == len(r) for r in rows)  # no frame twice in one forward
        assert {row for r in rows for row in r} == want


@pytest.mark.parametrize("model_name", ["tiny-llava", "tiny-qwen2-vl"])
@pytest.mark.parametrize("mode", ["action_logits", "generate"])
def test_rescoring_a_rollout_reproduces_the_acting_logprobs(
    tmp_path: Path, model_name: str, mode: str
) -> None:
    """The update scores each turn on its own frame, prompt and answer, in any minibatch order:
    the importance ratio is 1 before the first step (another turn's frame would change it)."""
    from mmrl_harness.train.episodic.policy import score_turns

    _, loaded, spec, model, _, rollout = _rollout(tmp_path, mode, 2, model_name)
    with torch.no_grad():
        again = score_turns(model, loaded, spec, rollout.frames, rollout.prompts, rollout.answers)
        reversed_rows = list(range(len(rollout)))[::-1]
        shuffled = score_turns(
            model,
            loaded,
            spec,
            [rollout.frames[i] for i in reversed_rows],
            [rollout.prompts[i] for i in reversed_rows],
            rollout.answers.select(reversed_rows),
        )
    # Acting ran the turns in batches of 4 envs, re-scoring runs them all at once (and reversed):
    # the same log-probabilities up to float32 summation order (~1e-6 at magnitude ~1), while
    # another turn's frame or prompt would move them by far more than 1e-5.
    assert torch.allclose(again.logprobs, rollout.logprobs, atol=1e-5)
    assert torch.allclose(shuffled.logprobs.flip(0), rollout.logprobs, atol=1e-5)


def test_the_kl_reference_is_the_model_with_lora_disabled(tmp_path: Path) -> None:
    from accelerate import Accelerator

    from mmrl_harness.train.episodic.config import EpisodicConfig
    from mmrl_harness.train.episodic.policy import score_turns
    from mmrl_harness.train.episodic.update import reference_logprobs

    _, loaded, spec, model, _, rollout = _rollout(tmp_path, "generate", steps=2)
    accelerator = Accelerator(cpu=True)
    before = reference_logprobs(accelerator, model, loaded, spec, rollout, 2)
    # Untrained LoRA (B = 0) and untouched modules_to_save copies: policy == reference, up to
    # the float32 summation order of other batch shapes (as in the re-scoring test above).
    assert torch.allclose(before, rollout.logprobs, atol=1e-5)
    stats = _optimize(model, loaded, spec, rollout, EpisodicConfig(kl_coef=0.1, num_minibatches=2))
    assert stats["kl"] > 0
    after = reference_logprobs(accelerator, model, loaded, spec, rollout, 2)
    # Training never moves the reference: same inputs, same batches, so only a moved weight
    # could change it beyond rounding.
    assert torch.allclose(after, before, atol=1e-5)
    with torch.no_grad():
        moved = score_turns(model, loaded, spec, rollout.frames, rollout.prompts, rollout.answers)
    assert not torch.allclose(moved.logprobs, before, atol=1e-3)  # 100x the rounding bound


def _pil(frame: np.ndarray) -> Any:
    from PIL import Image

    return Image.fromarray(frame)


def _rows(pixels: torch.Tensor) -> list[bytes]:
    return [row.numpy().tobytes() for row in pixels]


class _GradientRecorder(torch.optim.Optimizer):
    """An optimizer whose ``step`` records the accumulated gradients and moves nothing.

    With the parameters fixed, every step of two runs sees the same model, so their gradients can
    be compared one by one; after real (Adam) steps tiny differences would be amplified by
    ``1 / sqrt(v)`` on near-zero gradients and compare nothing about micro-batching.
    """

    def __init__(self, params: list[torch.nn.Parameter]) -> None:
        super().__init__(params, {})
        self.gradients: list[list[torch.Tensor]] = []

    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        params = [p for group in self.param_groups for p in group["params"]]
        self.gradients.append(
            [torch.zeros_like(p) if p.grad is None else p.grad.detach().clone() for p in params]
        )


def test_micro_batches_accumulate_the_whole_minibatch_gradient(tmp_path: Path) -> None:
    import copy

    from accelerate import Accelerator

    from mmrl_harness.train.algorithms.ppo import PPO
    from mmrl_harness.train.episodic.config import EpisodicConfig
    from mmrl_harness.train.episodic.update import optimize

    _, loaded, spec, model, _, rollout = _rollout(tmp_path, "action_logits", steps=3)
    twin = copy.deepcopy(model)
    opts = EpisodicConfig(ppo_epochs=2, num_minibatches=2, kl_coef=0.1)
    recorded = []
    # 12 turns -> minibatches of 6 -> micro-batches of 2, 2, 1, 1: unequal parts, so a wrong
    # per-part weighting shows.
    for net, micro_batches in ((model, 1), (twin, 4)):
        params = [p for p in net.parameters() if p.requires_grad]
        recorder = _GradientRecorder(params)
        torch.manual_seed(0)  # the same minibatch order in both runs
        stats = optimize(
            Accelerator(cpu=True),
            net,
            recorder,
            params,
            loaded,
            spec,
            rollout,
            opts,
            PPO(),
            micro_batches,
        )
        recorded.append((stats, recorder.gradients))
    (whole, whole_grads), (split, split_grads) = recorded
    assert len(whole_grads) == len(split_grads) == opts.ppo_epochs * opts.num_minibatches
    # The loss is a mean of a handful of per-turn float32 terms summed in another order:
    # relative error of a few float32 ulps (~1e-7 each), so 1e-5 relative has a wide margin.
    assert split["loss"] == pytest.approx(whole["loss"], rel=1e-5, abs=1e-6)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    for step, (a_step, b_step) in enumerate(zip(whole_grads, split_grads, strict=True)):
        assert any(bool(g.abs().sum() > 0) for g in a_step), "the test needs a non-zero gradient"
        for name, a, b in zip(names, a_step, b_step, strict=True):
            # Each gradient entry is a sum over the minibatch's turns (and positions); splitting
            # the minibatch only regroups that float32 sum. Its rounding error is a few ulps of
            # the largest summand, so the bound scales with the tensor's own magnitude: 1e-4 of
            # its largest entry (~1000 float32 ulps) absorbs any summation order, while a wrong
            # weighting of the parts (1/4 each instead of len(part)/len(rows), or none) moves
            # entries by tens of percent.
            scale = float(a.abs().max())
            torch.testing.assert_close(
                b, a, rtol=0, atol=1e-4 * scale + 1e-12, msg=f"step {step}: {name}"
            )


def test_target_kl_ends_the_update_before_the_step_that_would_exceed_it(tmp_path: Path) -> None:
    from accelerate import Accelerator

    from mmrl_harness.train.algorithms.ppo import PPO
    from mmrl_harness.train.episodic.config import EpisodicConfig
    from mmrl_harness.train.episodic.update import optimize

    _, loaded, spec, model, _, rollout = _rollout(tmp_path, "action_logits", steps=3)
    initial = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    counts = {}
    for target in (None, 1e3, 1e-6):
        model.load_state_dict(initial, strict=False)
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(params, lr=1e-2)
        opts = EpisodicConfig(ppo_epochs=3, num_minibatches=2, target_kl=target)
        stats = optimize(
            Accelerator(cpu=True), model, optimizer, params, loaded, spec, rollout, opts, PPO()
        )
        adam_steps = {int(s["step"]) for s in optimizer.state.values()}
        assert adam_steps == {int(stats["optimizer_steps"])}
        counts[target] = int(stats["optimizer_steps"])
    # Off, or a bound never reached: every epoch's every minibatch steps.
    assert counts[None] == counts[1e3] == 3 * 2
    # The first minibatch is scored by the rollout's own policy (ratio 1, KL ~1e-11: the re-scoring
    # differs from acting by float32 summation order only), so it always steps; after one Adam
    # step of 1e-2 on every LoRA weight the next minibatch's KL is far above 1e-6, so the update
    # ends there, the remaining epochs included.
    assert counts[1e-6] == 1


def test_value_learning_rate_gives_the_value_head_its_own_adam_group() -> None:
    from mmrl_harness.train.episodic.policy import ValueHead
    from mmrl_harness.train.episodic.trainer import make_optimizer

    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.policy = torch.nn.Linear(8, 8)
            self.value_head = ValueHead(8, 4)

    net = Tiny()
    torch.nn.init.normal_(net.value_head.net[2].weight)  # so every value-head weight has a gradient
    shared = make_optimizer(net, 1e-3, None)  # type: ignore[arg-type]
    assert [g["lr"] for g in shared.param_groups] == [1e-3]
    optimizer = make_optimizer(net, 1e-3, 1e-2)  # type: ignore[arg-type]
    policy_group, value_group = optimizer.param_groups
    assert (policy_group["lr"], value_group["lr"]) == (1e-3, 1e-2)
    assert {id(p) for p in value_group["params"]} == {id(p) for p in net.value_head.parameters()}
    assert {id(p) for p in policy_group["params"]} == {id(p) for p in net.policy.parameters()}
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    x = torch.randn(16, 8)
    (net.value_head(net.policy(x)) ** 2).mean().backward()
    optimizer.step()
    # Adam's first step moves each weight by lr * g / (|g| + 1e-5): lr to within 1e-5 / |g| of
    # it for the largest gradients (|g| >= 1e-3 here), so the largest move is each group's lr.
    moved = {n: float((p.detach() - before[n]).abs().max()) for n, p in net.named_parameters()}
    assert max(v for n, v in moved.items() if n.startswith("value_head")) == pytest.approx(
        1e-2, rel=1e-2
    )
    assert max(v for n, v in moved.items() if n.startswith("policy")) == pytest.approx(
        1e-3, rel=1e-2
    )


def test_ppo_with_target_kl_and_a_value_learning_rate_resumes_exactly(tmp_path: Path) -> None:
    from mmrl_harness.train.episodic.trainer import train_episodic
    from mmrl_harness.train.policy import build_policy

    # A target KL this small ends most updates after a step or two, so the stop is exercised.
    episodic = {"target_kl": 1e-4, "value_learning_rate": 3e-3}
    straight_cfg = _config(tmp_path / "a", max_steps=4, save_steps=2, episodic=episodic)
    straight = build_policy(straight_cfg)
    done = train_episodic(straight_cfg, straight)
    steps = [int(h["optimizer_steps"]) for h in done.log_history]
    assert len(steps) == 4 and min(steps) >= 1 and sum(steps) < 4 * 4 * 2
    optimizer = torch.load(
        Path(straight_cfg.output_dir) / "checkpoint-4" / "optimizer.bin", weights_only=False
    )
    assert [g["lr"] for g in optimizer["param_groups"]] == [1e-3, 3e-3]
    assert {s["step"].item() for s in optimizer["state"].values()} == {sum(steps)}

    _train(_config(tmp_path / "b", max_steps=2, save_steps=2, episodic=episodic))
    resumed_cfg = _config(
        tmp_path / "b", max_steps=4, save_steps=2, episodic=episodic, allow_config_change=True
    )
    resumed = build_policy(resumed_cfg)
    result = train_episodic(resumed_cfg, resumed)
    assert [int(h["optimizer_steps"]) for h in result.log_history] == steps[2:]
    # Same process, shapes and order of every sum as the straight run, and the stop is decided
    # on the same numbers: bit for bit.
    a, b = _trainable_state(straight.peft_model), _trainable_state(resumed.peft_model)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_anneal_lr_decays_each_param_group_linearly_from_its_own_initial_lr() -> None:
    from mmrl_harness.train.episodic.config import EpisodicConfig
    from mmrl_harness.train.episodic.policy import ValueHead
    from mmrl_harness.train.episodic.trainer import make_optimizer, set_learning_rates

    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.policy = torch.nn.Linear(8, 8)
            self.value_head = ValueHead(8, 4)

    optimizer = make_optimizer(Tiny(), 1e-3, 1e-2)  # type: ignore[arg-type]
    base = [g["lr"] for g in optimizer.param_groups]
    lrs = {}
    for update in (1, 2, 5, 10):
        set_learning_rates(optimizer, base, update, 10, EpisodicConfig(anneal_lr=True))
        lrs[update] = [g["lr"] for g in optimizer.param_groups]
    # base * (1 - (u - 1) / 10): the same few float operations on both sides, so approx to 1 ulp.
    assert lrs[1] == [1e-3, 1e-2]
    assert lrs[2] == pytest.approx([0.9e-3, 0.9e-2], rel=1e-12)
    assert lrs[5] == pytest.approx([0.6e-3, 0.6e-2], rel=1e-12)
    assert lrs[10] == pytest.approx([0.1e-3, 0.1e-2], rel=1e-12)
    # Off: every update steps with the initial lrs, whatever the groups held before.
    set_learning_rates(optimizer, base, 7, 10, EpisodicConfig())
    assert [g["lr"] for g in optimizer.param_groups] == [1e-3, 1e-2]


def test_ppo_with_anneal_lr_logs_the_schedule_and_resumes_on_it_exactly(tmp_path: Path) -> None:
    import shutil

    from mmrl_harness.train.episodic.trainer import scheduled_lr, train_episodic
    from mmrl_harness.train.policy import build_policy

    episodic = {"anneal_lr": True, "value_learning_rate": 3e-3}
    config = _config(tmp_path, max_steps=4, save_steps=2, save_total_limit=None, episodic=episodic)
    straight = build_policy(config)
    done = train_episodic(config, straight)
    expected = [scheduled_lr(1e-3, u, 4, True) for u in (1, 2, 3, 4)]
    assert [h["learning_rate"] for h in done.log_history] == expected
    assert expected == pytest.approx([1e-3, 0.75e-3, 0.5e-3, 0.25e-3], rel=1e-12)
    run = Path(config.output_dir)
    saved = torch.load(run / "checkpoint-4" / "optimizer.bin", weights_only=False)
    # The value head's own group anneals from its own initial lr, on the same schedule.
    assert [g["lr"] for g in saved["param_groups"]] == [
        scheduled_lr(1e-3, 4, 4, True),
        scheduled_lr(3e-3, 4, 4, True),
    ]

    # The run interrupted after checkpoint-2 (whose Adam state holds update 2's lrs) resumes
    # updates 3 and 4 on the schedule, not at the restored lr.
    shutil.rmtree(run / "checkpoint-4")
    resumed = build_policy(config)
    result = train_episodic(config, resumed)
    assert result.resumed_from == run / "checkpoint-2"
    assert [h["learning_rate"] for h in result.log_history] == expected[2:]
    again = torch.load(run / "checkpoint-4" / "optimizer.bin", weights_only=False)
    assert [g["lr"] for g in again["param_groups"]] == [g["lr"] for g in saved["param_groups"]]
    # Same process, shapes and order of every sum as the straight run: bit for bit.
    a, b = _trainable_state(straight.peft_model), _trainable_state(resumed.peft_model)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


# -- checkpoints, resume, errors ---------------------------------------------------------------
def test_resume_continues_update_count_and_optimizer_exactly(tmp_path: Path) -> None:
    from mmrl_harness.train.policy import build_policy

    straight_cfg = _config(tmp_path / "a", "episodic_grpo", max_steps=4, save_steps=2)
    straight = build_policy(straight_cfg)
    from mmrl_harness.train.episodic.trainer import train_episodic

    train_episodic(straight_cfg, straight)

    first = _train(_config(tmp_path / "b", "episodic_grpo", max_steps=2, save_steps=2))
    assert first.global_step == 2 and first.resumed_from is None
    resumed_cfg = _config(
        tmp_path / "b", "episodic_grpo", max_steps=4, save_steps=2, allow_config_change=True
    )
    resumed = build_policy(resumed_cfg)
    result = train_episodic(resumed_cfg, resumed)
    assert result.resumed_from == Path(resumed_cfg.output_dir) / "checkpoint-2"
    assert [h["step"] for h in result.log_history] == [3, 4]
    assert result.global_step == 4
    # Adam's step count went on from the checkpoint: 4 updates x 4 epochs x 2 minibatches
    optimizer = torch.load(
        Path(resumed_cfg.output_dir) / "checkpoint-4" / "optimizer.bin", weights_only=False
    )
    assert {s["step"].item() for s in optimizer["state"].values()} == {4 * 4 * 2}
    # Whole episodes per update and update-keyed seeds: the resumed run equals the straight one,
    # bit for bit: same process, same batch shapes, same order of every sum, so exact is right.
    a, b = _trainable_state(straight.peft_model), _trainable_state(resumed.peft_model)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_nan_reward_names_the_episode_and_leaves_the_last_checkpoint_intact(
    tmp_path: Path,
) -> None:
    import gymnasium

    from mmrl_harness.envs.numberline import NumberLineEnv
    from mmrl_harness.tasks import get_task
    from mmrl_harness.train.episodic.rollout import EpisodeError

    run = tmp_path / "run"
    marker = run / "checkpoint-2" / "manifest.json"

    class NanAfterTwo(NumberLineEnv):
        # A reward that turns NaN once checkpoint-2 is written (resume refuses a changed task).
        def step(self, action: Any) -> Any:
            observation, reward, terminated, truncated, info = super().step(action)
            return (
                observation,
                float("nan") if marker.exists() else reward,
                terminated,
                truncated,
                info,
            )

    gymnasium.register("mmrl_test/NanAfterTwo-v0", entry_point=NanAfterTwo)
    task = get_task("numberline").model_dump(mode="json")
    task.update(name="nan_line", env="mmrl_test/NanAfterTwo-v0")
    task_file = tmp_path / "nan_line.yaml"
    task_file.write_text(yaml.safe_dump(task))
    with pytest.raises(EpisodeError) as err:
        _train(_config(tmp_path, max_steps=4, task=str(task_file)))
    message = str(err.value)
    assert "task 'nan_line', episode seed" in message
    assert "step" in message and "reward is nan" in message and "update 3" in message
    assert "checkpoint-2, untouched" in message
    assert sorted(p.name for p in run.iterdir() if p.name.startswith("checkpoint")) == [
        "checkpoint-2"
    ]
    from mmrl_harness.train.checkpoints import verify_checkpoint

    assert verify_checkpoint(run / "checkpoint-2") is not None  # every file as written


def test_sigkill_after_a_checkpoint_then_resume_finishes_with_the_full_step_count(
    tmp_path: Path, mmrl_cache: Path
) -> None:
    script = tmp_path / "train.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import torch
            torch.set_num_threads(1)
            from mmrl_harness.train.config import train_config_from_dict
            from mmrl_harness.train.episodic.trainer import train_episodic
            from mmrl_harness.train.policy import build_policy
            config = train_config_from_dict({_config(tmp_path, max_steps=200, save_steps=1).model_dump(mode="json")!r})
            train_episodic(config, build_policy(config))
            """
        )
    )
    env = {**os.environ, "MMRL_CACHE": str(mmrl_cache), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, str(script)], env=env, stdout=subprocess.DEVNULL)
    run = tmp_path / "run"
    deadline = time.monotonic() + 120
    try:
        while not (run / "checkpoint-2").is_dir():
            assert proc.poll() is None, "the training process died before its second checkpoint"
            assert time.monotonic() < deadline, "no second checkpoint within 120 s"
            time.sleep(0.1)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    from mmrl_harness.train.checkpoints import last_checkpoint

    killed_at = last_checkpoint(run)
    assert killed_at is not None
    done = int(killed_at.name.split("-")[1])
    result = _train(_config(tmp_path, max_steps=done + 2, save_steps=1, allow_config_change=True))
    assert result.resumed_from == killed_at
    assert [h["step"] for h in result.log_history] == [done + 1, done + 2]
    optimizer = torch.load(run / f"checkpoint-{done + 2}" / "optimizer.bin", weights_only=False)
    assert {s["step"].item() for s in optimizer["state"].values()} == {(done + 2) * 4 * 2}


def test_two_cpu_processes_over_gloo_pool_episodes_and_keep_weights_in_sync(
    tmp_path: Path, mmrl_cache: Path
) -> None:
    script = tmp_path / "train.py"
    config = _config(tmp_path, max_steps=2, use_cpu=True).model_dump(mode="json")
    script.write_text(
        textwrap.dedent(
            f"""
            import torch
            torch.set_num_threads(1)
            from mmrl_harness.train.config import train_config_from_dict
            from mmrl_harness.train.episodic.trainer import train_episodic
            from mmrl_harness.train.policy import build_policy
            config = train_config_from_dict({config!r})
            policy = build_policy(config)
            result = train_episodic(config, policy)
            weights = sum(
                p.double().sum().item() for p in policy.peft_model.parameters() if p.requires_grad
            )
            rank = torch.distributed.get_rank()
            # One file per rank: the two processes' stdout lines can interleave.
            with open(f"{tmp_path}/rank{{rank}}.txt", "w") as out:
                out.write(f"{{result.global_step}} {{result.log_history[-1]['episodes']}} {{weights!r}}")
            """
        )
    )
    env = {**os.environ, "MMRL_CACHE": str(mmrl_cache), "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    done = subprocess.run(
        [*command, str(script)], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [(tmp_path / f"rank{r}.txt").read_text().split() for r in (0, 1)]
    assert rows[0][0] == rows[1][0] == "2"  # both ranks ran every update
    single = _train(_config(tmp_path / "single", max_steps=1)).log_history[-1]["episodes"]
    assert float(rows[0][1]) > single  # episodes of both processes are pooled in the metrics
    assert rows[0][2] == rows[1][2]  # DDP kept the trained weights identical
