"""The README's first command: everything offline, on a tiny model, in seconds."""

from __future__ import annotations

import time

from rich.console import Console


def run_quickstart(family: str = "llava", console: Console | None = None) -> str:
    """Build the tiny VLM, draw an image, ask about it; returns the model's answer."""
    from mmrl_harness.envs.drawing import canvas, draw_shape
    from mmrl_harness.models.generation import generate_answer
    from mmrl_harness.models.loading import load_vlm

    console = console or Console()
    name = {"llava": "tiny-llava", "qwen2_vl": "tiny-qwen2-vl"}.get(family)
    if name is None:
        raise ValueError(f"unknown tiny family {family!r}; choose 'llava' or 'qwen2_vl'")
    start = time.perf_counter()
    with console.status(f"building and loading {name} (offline)"):
        loaded = load_vlm(name)
    params = sum(p.numel() for p in loaded.model.parameters())
    console.print(f"loaded [bold]{name}[/] ({params:,} parameters) from {loaded.source_dir}")
    image, draw = canvas(32, (245, 245, 245))
    draw_shape(draw, "circle", 16, 16, 10, (220, 40, 40))
    question = "what color is the shape ?"
    answer = generate_answer(loaded, image, question)
    console.print(f"image: a red circle | question: {question!r} | answer: {answer!r}")
    console.print(
        "(the tiny model has random weights, so its answer is arbitrary until trained) "
        f"— done in {time.perf_counter() - start:.1f} s"
    )
    return answer
