"""Supervised probes of the PPO example's policy on NumberLine: capacity and critic features.

    python benchmarks/numberline_supervised_probe.py [--lr 3e-4] [--steps 200] [--rank 8]

Builds the model of ``examples/ppo_numberline_tiny.yaml`` (tiny LLaVA, LoRA on every linear
layer + ``lm_head``, 32 px) and the 20 (target, marker) states of the 5-position line, then:

1. fits the oracle action on all 20 states with cross-entropy over the two action words' logits
   (the ``action_logits`` head), full batch, Adam; prints which states are still wrong every 25
   steps: whether the trainable set can represent the optimal policy, and which state is hard;
2. prints how much the value head's input (the last hidden state at the answer position)
   varies across the 20 states at initialisation, and fits a fresh value head on those features
   alone (detached) to a signed distance, printing the explained variance.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples/ppo_numberline_tiny.yaml"


def main() -> None:
    """Run both probes and print their progress."""
    from mmrl_harness.evaluate import resolve_task
    from mmrl_harness.policy_head import policy_spec, turn_inputs
    from mmrl_harness.tasks.gym_task import make_task_env
    from mmrl_harness.train.config import train_config_from_dict
    from mmrl_harness.train.episodic.policy import ValueHead, hidden_size
    from mmrl_harness.train.policy import build_policy

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--rank", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = yaml.safe_load(EXAMPLE.read_text())
    data.update(use_cpu=True, output_dir="runs/probe")
    data["lora"]["r"] = args.rank
    config = train_config_from_dict(data)
    policy = build_policy(config)
    task = resolve_task(config.task, config.task_overrides)
    env = make_task_env(task)
    line = env.env.unwrapped
    frames, prompts, states = [], [], []
    for target in range(line.line_length):
        for position in range(line.line_length):
            if position != target:
                line.target, line.position = target, position
                frames.append(line._observation()["image"])
                prompts.append(task.prompt.format(text=line._text()))
                states.append((target, position))
    labels = torch.tensor([1 if t > p else 0 for t, p in states])  # 1: right
    inputs, _ = turn_inputs(policy.vlm, frames, prompts)
    spec = policy_spec(policy.vlm, "action_logits", env.action_words, 1.0, 1)
    model = policy.peft_model
    with torch.no_grad():
        hidden = model(**inputs, output_hidden_states=True, logits_to_keep=1).hidden_states[-1]
    hidden = hidden[:, -1].float()
    print(
        f"value-head input at init: spread across states {hidden.std(0).mean():.3f} per "
        f"dimension, mean magnitude {hidden.abs().mean():.3f}"
    )
    head = ValueHead(hidden_size(model))
    target_v = torch.tensor([float(t - p) for t, p in states])
    opt = torch.optim.Adam(head.parameters(), lr=args.lr, eps=1e-5)
    for _ in range(args.steps):
        values = head(hidden)
        loss = 0.5 * ((values - target_v) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    ev = 1 - (target_v - head(hidden).detach()).var() / target_v.var()
    print(
        f"value head on these features alone: explained variance {ev:.2f} after {args.steps} steps"
    )
    params = [p for p in model.parameters() if p.requires_grad]
    print(f"supervised fit, {sum(p.numel() for p in params)} trainable parameters, lr {args.lr}")
    opt = torch.optim.Adam(params, lr=args.lr, eps=1e-5)
    cpu = time.process_time()
    for step in range(args.steps + 1):
        logits = model(**inputs, logits_to_keep=1).logits[:, -1, list(spec.action_ids)].float()
        loss = torch.nn.functional.cross_entropy(logits, labels)
        if step % 25 == 0:
            wrong = [states[i] for i in range(len(states)) if logits[i].argmax() != labels[i]]
            print(f"step {step:4d}: loss {loss.item():.3f}, wrong (target, marker) {wrong}")
        opt.zero_grad()
        loss.backward()
        opt.step()
    print(f"{time.process_time() - cpu:.0f} CPU s")


if __name__ == "__main__":
    main()
