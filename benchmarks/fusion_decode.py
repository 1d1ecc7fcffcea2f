"""``cross_attention`` decode steps with and without cached image keys/values, side by side.

    python benchmarks/fusion_decode.py [--threads 1] [--clock cpu] [--reps 9] [--new-tokens 32]

Three copies of the same random-init LLaVA (the ``large`` configuration of
``fusion_overhead.py``): plain ``concat``, ``cross_attention`` with ``cache_image_kv=False`` (the
image keys/values recomputed at every decode step, as before the cache) and ``cross_attention``
with the default cache. Each repetition times, in a rotating order, a greedy ``generate()`` of
``--new-tokens`` tokens and of one token per model; their difference divided by
``new_tokens - 1`` is the time of one decode step (the prefill cancels out). Gates are opened so
the blocks do real work, and the script checks that both ``cross_attention`` copies generate the
same tokens. The table gives median decode-step times and the median paired ratios.
"""

from __future__ import annotations

import argparse
import copy
import statistics
from typing import Any

import torch
from fusion_overhead import CLOCKS, large_llava, make_inputs

from mmrl_harness.fusion import attach_fusion

VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "concat": ("concat", {}),
    "cross_attention, no K/V cache": ("cross_attention", {"cache_image_kv": False}),
    "cross_attention (cached K/V)": ("cross_attention", {}),
}


def build(base: Any) -> dict[str, Any]:
    """Each variant attached to its own copy of ``base``, gates opened to 0.5."""
    models = {}
    for label, (name, options) in VARIANTS.items():
        model = copy.deepcopy(base)
        torch.manual_seed(1)  # both cross_attention copies get the same random block weights
        attach_fusion(model, name, **options)
        with torch.no_grad():
            for pname, param in model.named_parameters():
                if "mmrl" in pname and pname.endswith("gate"):
                    param.fill_(0.5)
        models[label] = model.eval()
    return models


def generate(model: Any, inputs: dict[str, torch.Tensor], new_tokens: int) -> torch.Tensor:
    """Greedy generation of exactly ``new_tokens`` tokens."""
    with torch.no_grad():
        return model.generate(  # type: ignore[no-any-return]
            **inputs,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            pad_token_id=0,
        )


def main() -> None:
    """Parse arguments, measure interleaved, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--clock", choices=list(CLOCKS), default="cpu", help="what to time")
    parser.add_argument("--reps", type=int, default=9, help="timed repetitions per model")
    parser.add_argument("--warmup", type=int, default=1, help="untimed repetitions first")
    parser.add_argument("--batch", type=int, default=4, help="rows per generate call")
    parser.add_argument("--text-tokens", type=int, default=48, help="prompt text tokens per row")
    parser.add_argument("--new-tokens", type=int, default=32, help="tokens generated per call")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    clock = CLOCKS[args.clock]
    print(f"torch {torch.__version__}, threads: {torch.get_num_threads()}, clock: {args.clock}")
    base = large_llava()
    inputs = make_inputs(base, args.batch, args.text_tokens)
    models = build(base)
    labels = list(models)
    outputs = {n: generate(m, inputs, args.new_tokens) for n, m in models.items()}
    same = torch.equal(outputs[labels[1]], outputs[labels[2]])
    print(f"cross_attention with and without the K/V cache generate the same tokens: {same}")
    steps: dict[str, list[float]] = {n: [] for n in labels}
    for rep in range(args.warmup + args.reps):
        shift = rep % len(labels)
        for label in labels[shift:] + labels[:shift]:
            start = clock()
            generate(models[label], inputs, args.new_tokens)
            middle = clock()
            generate(models[label], inputs, 1)
            end = clock()
            if rep >= args.warmup:
                steps[label].append(((middle - start) - (end - middle)) / (args.new_tokens - 1))
    ratios = {n: [a / c for a, c in zip(t, steps["concat"], strict=True)] for n, t in steps.items()}
    cached, uncached = labels[2], labels[1]
    speedup = [u / c for u, c in zip(steps[uncached], steps[cached], strict=True)]
    print(
        f"\nbatch {args.batch} x (image + {args.text_tokens} text tokens), {args.new_tokens} new "
        f"tokens, {args.reps} repetitions\n"
    )
    print(f"| model | decode step ({args.clock} ms) | vs concat |")
    print("|---|---:|---:|")
    for label in labels:
        median_ms = statistics.median(steps[label]) * 1e3
        print(f"| {label} | {median_ms:.2f} | {statistics.median(ratios[label]):.3f}x |")
    print(f"\ncached K/V decode-step speed-up (paired median): {statistics.median(speedup):.2f}x")


if __name__ == "__main__":
    main()
