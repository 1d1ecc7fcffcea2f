"""Cost of one GRPO step at a realistic size: the harness (old and new LoRA default) vs plain TRL.

The model is a ~190M-parameter LLaVA built offline from configs, nothing downloaded: a CLIP
ViT-B/16 vision tower at 224 px (86M) and a Llama shaped like SmolLM2-135M (hidden 576, 30
layers, 9 heads, 3 KV heads, MLP 1536), random weights, with the tiny models' word-level
tokenizer and chat template (``mmrl_harness.models.tiny``), so the vocabulary is ~100 words and
the embedding tables are negligible. Each image is 196 image tokens.

Three sides, each in a fresh subprocess so that its peak RSS (``ru_maxrss``: the whole process,
model load included) is its own:

- ``harness-old``: ``mmrl``'s GRPO with the previous default LoRA, ``all-linear`` (vision tower
  and projector included), plus the full ``lm_head``;
- ``harness-new``: the current default, LoRA on the language model's linear layers, ``lm_head``;
- ``plain``: a plain TRL ``GRPOTrainer`` + PEFT script with the same LoRA as ``harness-new``
  (the regex the harness resolves, ``modules_to_save=["lm_head"]``); no harness import.

Every side runs the same rows (colour-of-the-shape prompts and 224 px frames), 8 completions of
1 token per step (one prompt), the same GRPOConfig values and ``--threads`` torch threads. Step
time is the wall time between ``on_step_end`` callbacks (generation, reward, loss, backward,
optimizer); the fastest of ``--steps`` steps is reported (the first pays warm-up, and on shared
cores the least disturbed step is the best estimate), with the first beside it.

    python benchmarks/realistic_grpo_step.py [--steps 2] [--threads 2] [--output out.json]

Takes 3-5 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# The same step clock as the tiny comparison (run as a script, this folder is on sys.path).
from grpo_overhead import save_rows_with_answers, step_timer

SIDES = ("harness-old", "harness-new", "plain")
IMAGE_SIZE = 224
RUN: dict[str, Any] = {
    "task": "color_shape",
    "task_overrides": {
        "env_kwargs.image_size": IMAGE_SIZE,
        "env_kwargs.question": "color",
        "env_kwargs.colors": ["red", "green", "blue", "yellow"],
    },
    "learning_rate": 1e-4,
    "per_device_batch_size": 8,  # one prompt x 8 completions
    "num_generations": 8,
    "max_new_tokens": 1,
    "logging_steps": 1,
    "resume": False,
    "eval": {"enabled": False},
    "grpo": {"lr_scheduler_type": "constant"},
}
LORA = {
    "harness-old": {"target_modules": "all-linear"},
    "harness-new": {},  # the default: language-model
}


def build_model(folder: Path) -> int:
    """Write the ~190M LLaVA (random weights, tiny tokenizer) as a save_pretrained folder;
    returns its parameter count."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    from mmrl_harness.models import tiny, vocab
    from mmrl_harness.models.families import llava

    patch = 16
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(  # ViT-B/16
            hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
            num_attention_heads=12, image_size=IMAGE_SIZE, patch_size=patch, projection_dim=512,
        ),
        text_config=LlamaConfig(  # SmolLM2-135M's shape, the tiny vocabulary
            hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
            num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=2048,
            vocab_size=len(vocab.VOCAB), bos_token_id=tiny.token_id(vocab.BOS_TOKEN),
            eos_token_id=tiny.token_id(vocab.EOS_TOKEN),
            pad_token_id=tiny.token_id(vocab.PAD_TOKEN), tie_word_embeddings=False,
        ),
        image_token_index=tiny.token_id(vocab.IMAGE_TOKEN),
        vision_feature_select_strategy="default",  # drop CLS: 14 x 14 = 196 image tokens
        vision_feature_layer=-1,
        image_seq_length=(IMAGE_SIZE // patch) ** 2,
        tie_word_embeddings=False,
    )  # fmt: skip
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessorPil(
            size={"shortest_edge": IMAGE_SIZE},
            crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        ),
        # The tiny LLaVA's recipe: this is the same tokenizer, not a copy.
        tokenizer=llava.tokenizer(),
        patch_size=patch,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=tiny.chat_template(vocab.IMAGE_TOKEN),
    )
    model = tiny.random_model(config, seed=0)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return sum(p.numel() for p in model.parameters())


def _config(side: str, model_dir: str, output_dir: str, steps: int) -> Any:
    from mmrl_harness.train import train_config_from_dict

    return train_config_from_dict(
        {
            **RUN,
            "model": model_dir,
            "lora": LORA[side],
            "output_dir": output_dir,
            "max_steps": steps,
            "save_steps": steps + 1,
        }
    )


def worker_harness(side: str, meta: dict[str, Any], output_dir: str, steps: int) -> list[float]:
    """The harness path of ``mmrl train``: build_policy + train_grpo (evaluation off)."""
    from mmrl_harness.train import build_policy
    from mmrl_harness.train.algorithms.grpo_trainer import train_grpo

    config = _config(side, meta["model_dir"], output_dir, steps)
    timer = step_timer()
    train_grpo(config, build_policy(config), callbacks=[timer])
    return [b - a for a, b in zip(timer.marks, timer.marks[1:], strict=False)]


def worker_plain(meta: dict[str, Any], data_dir: str, output_dir: str) -> list[float]:
    """A minimal plain-TRL script with the harness's new default LoRA: no harness import."""
    from datasets import load_from_disk
    from peft import LoraConfig
    from transformers import AutoModelForImageTextToText, AutoProcessor, set_seed
    from trl import GRPOConfig, GRPOTrainer

    set_seed(0)
    model = AutoModelForImageTextToText.from_pretrained(meta["model_dir"])
    processor = AutoProcessor.from_pretrained(meta["model_dir"])
    dataset = load_from_disk(str(Path(data_dir) / "rows"))

    def reward(completions: list[Any], answer: list[str], **kwargs: Any) -> list[float | None]:
        words = [(c[0]["content"].split() or [""])[0].lower() for c in completions]
        return [float(w == a) for w, a in zip(words, answer, strict=True)]

    lora = LoraConfig(
        r=8, lora_alpha=16, target_modules=meta["target_modules"], modules_to_save=["lm_head"],
        task_type="CAUSAL_LM",
    )  # fmt: skip
    timer = step_timer()
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=reward,
        args=GRPOConfig(**{**meta["grpo_kwargs"], "output_dir": output_dir}),
        train_dataset=dataset,
        processing_class=processor,
        peft_config=lora,
        callbacks=[timer],
    )
    trainer.train()
    return [b - a for a, b in zip(timer.marks, timer.marks[1:], strict=False)]


def prepare(data_dir: Path, steps: int) -> None:
    """The model folder, the rows (with the answer for the plain reward), the GRPOConfig values
    and the LoRA target regex the harness resolves for the new default."""
    from mmrl_harness.train import build_policy
    from mmrl_harness.train.algorithms.grpo_trainer import (
        build_grpo_dataset,
        grpo_arguments,
        grpo_task,
    )

    model_dir = data_dir / "model"
    parameters = build_model(model_dir)
    config = _config("harness-new", str(model_dir), str(data_dir / "unused"), steps)
    task = grpo_task(config)
    dataset = build_grpo_dataset(task, config.train_seeds.seeds())
    save_rows_with_answers(task, dataset, data_dir / "rows")
    policy = build_policy(config)
    args = grpo_arguments(config, policy)
    keys = [
        "max_steps", "learning_rate", "per_device_train_batch_size",
        "gradient_accumulation_steps", "num_generations", "max_completion_length",
        "temperature", "save_steps", "logging_steps", "seed", "use_cpu", "disable_tqdm",
        "bf16", "fp16", "activation_checkpointing", "generation_kwargs",
    ]  # fmt: skip
    meta = {
        "model_dir": str(model_dir),
        "parameters": parameters,
        # The regex the harness resolved for its default (fusion.lora.language_model_targets).
        "target_modules": policy.lora_config.target_modules,
        "grpo_kwargs": {
            **{k: getattr(args, k) for k in keys},
            "report_to": "none",
            "lr_scheduler_type": "constant",
            "save_strategy": "steps",
        },
    }
    (data_dir / "meta.json").write_text(json.dumps(meta, default=str))


def _run_worker(side: str, data_dir: Path, steps: int, threads: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as out:
        command = [
            sys.executable, __file__, "--worker", side, "--data", str(data_dir),
            "--out", out, "--steps", str(steps), "--threads", str(threads),
        ]  # fmt: skip
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1"}
        started = time.perf_counter()
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{side} worker failed:\n{done.stderr[-4000:]}")
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        result["process_s"] = time.perf_counter() - started
        return result


def _report(results: dict[str, dict[str, Any]], meta: dict[str, Any], args: Any) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for side, run in results.items():
        steps = run["step_s"]
        summary[side] = {
            "step_s": min(steps),
            "first_step_s": steps[0],
            "peak_mib": run["peak_mib"],
            "process_s": run["process_s"],
        }
    new, old, plain = (summary[s] for s in SIDES[1:2] + SIDES[:1] + SIDES[2:])
    summary["ratio_new_over_plain"] = {
        "step_time": new["step_s"] / plain["step_s"],
        "peak_memory": new["peak_mib"] / plain["peak_mib"],
    }
    summary["ratio_old_over_new"] = {
        "step_time": old["step_s"] / new["step_s"],
        "peak_memory": old["peak_mib"] / new["peak_mib"],
    }
    print(
        f"LLaVA {meta['parameters'] / 1e6:.0f}M parameters (CLIP ViT-B/16 224 px + "
        f"SmolLM2-135M-shaped Llama), 8 completions x 1 token per step, {args.threads} torch "
        f"threads, fastest of {args.steps} steps, CPU"
    )
    for side in SIDES:
        s = summary[side]
        print(
            f"{side:12s} step {s['step_s']:6.1f} s (first {s['first_step_s']:.1f} s), "
            f"peak RSS {s['peak_mib']:6.0f} MiB, process {s['process_s']:.0f} s"
        )
    for key, label in (("ratio_new_over_plain", "new/plain"), ("ratio_old_over_new", "old/new")):
        r = summary[key]
        print(f"ratio {label:9s}: step time {r['step_time']:.3f}, peak RSS {r['peak_memory']:.3f}")
    return summary


def main() -> None:
    """Prepare once, run each side in its own process, print (and optionally save) the figures."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", default=None, help="write the numbers as JSON here")
    parser.add_argument("--worker", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    if args.worker:
        meta = json.loads((Path(args.data) / "meta.json").read_text())
        if args.worker == "plain":
            steps = worker_plain(meta, args.data, args.out)
        else:
            steps = worker_harness(args.worker, meta, args.out, args.steps)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps({"step_s": steps, "peak_mib": peak}))
        return

    with tempfile.TemporaryDirectory() as data:
        prepare(Path(data), args.steps)
        meta = json.loads((Path(data) / "meta.json").read_text())
        results = {side: _run_worker(side, Path(data), args.steps, args.threads) for side in SIDES}
    summary = _report(results, meta, args)
    if args.output:
        payload = {**summary, "threads": args.threads, "steps": args.steps, **meta}
        payload.pop("grpo_kwargs")
        payload.pop("model_dir")
        Path(args.output).write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
