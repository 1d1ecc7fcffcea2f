"""``mmrl plugins new``: write a ready-to-publish plugin distribution that passes its own test.

Each kind gets a ``pyproject.toml`` with the entry point, a module, a README and a test that
calls ``mmrl_harness.testing``; ``pip install -e DIR && pytest DIR`` passes as written.
"""

from __future__ import annotations

import re
from pathlib import Path
from string import Template
from typing import Literal

from mmrl_harness import __version__
from mmrl_harness.errors import MMRLError

ScaffoldKind = Literal["fusion", "task", "architecture"]
KINDS: tuple[ScaffoldKind, ...] = ("fusion", "task", "architecture")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class ScaffoldError(MMRLError, ValueError):
    """The plugin cannot be scaffolded as asked (bad name or kind, target not empty)."""


def new_plugin(kind: str, name: str, directory: Path | None = None) -> Path:
    """Write a ``kind`` plugin called ``name`` into ``directory`` (default ``./mmrl-NAME``).

    Returns the folder written. Refuses a folder that exists and is not empty.
    """
    if kind not in KINDS:
        raise ScaffoldError(f"unknown plugin kind {kind!r}; choose one of {', '.join(KINDS)}")
    if not _NAME.match(name):
        raise ScaffoldError(
            f"plugin name {name!r} must be lower-case letters, digits and underscores, starting "
            "with a letter (it becomes the registry name and the Python package)"
        )
    target = directory if directory is not None else Path(f"mmrl-{name.replace('_', '-')}")
    if target.exists() and any(target.iterdir()):
        raise ScaffoldError(f"{target} exists and is not empty; choose another --dir")
    fields = {
        "name": name,
        "package": f"mmrl_{name}",
        "dist": f"mmrl-{name.replace('_', '-')}",
        "title": name.replace("_", " "),
        "env_class": "".join(p.capitalize() for p in name.split("_")) + "Env",
        "harness": __version__,
    }
    for relative, template in _FILES[kind].items():
        path = target / Template(relative).substitute(fields)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(Template(template).substitute(fields), encoding="utf-8")
    return target


_PYPROJECT = """\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "$dist"
version = "0.1.0"
description = "$title: a $kind_label plugin for mmrl-harness"
readme = "README.md"
requires-python = ">=3.11"
dependencies = ["mmrl-harness>=$harness"]

[project.optional-dependencies]
test = ["pytest"]

[project.entry-points."mmrl_harness.$group"]
$name = "$package:$attribute"

[tool.setuptools]
packages = ["$package"]
"""


def _pyproject(kind_label: str, group: str, attribute: str, extra: str = "") -> str:
    text = (
        _PYPROJECT.replace("$kind_label", kind_label)
        .replace("$group", group)
        .replace("$attribute", attribute)
    )
    return text + extra


_README = """\
# $dist

A $kind_label plugin for [mmrl-harness](https://pypi.org/project/mmrl-harness/), registered as
`$name` in the `mmrl_harness.$group` entry-point group.

```bash
pip install -e ".[test]"     # or: pip install $dist
mmrl plugins --kind $group   # lists $name
mmrl plugins doctor $name    # runs the harness's contract checks on it
pytest                        # the same checks, from tests/
```

Publish: `python -m build` (or `pip wheel --no-deps .`), then `twine upload dist/*`.
$usage
"""


def _readme(kind_label: str, group: str, usage: str) -> str:
    return (
        _README.replace("$kind_label", kind_label).replace("$group", group).replace("$usage", usage)
    )


_FUSION_MODULE = '''\
"""$name: image tokens modulated by the prompt text (FiLM-style), gated to start as identity.

Every image token f becomes f + tanh(g) * (a * f + b), where (a, b) is a small projection of the
sample's pooled prompt text and g starts at 0, so the model is unchanged at initialisation.
The text is pooled with FusionInputs.pooled_prompt_text(): over real prompt tokens only, never
padding or completion tokens, so results do not depend on the batch and training does not leak
the answer into the image.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from mmrl_harness.fusion import FusionCost, FusionOptions
from mmrl_harness.fusion.image_context import FusionInputs
from mmrl_harness.fusion.input_fusion import InputFusionAdapter


class Options(FusionOptions):
    """Options of $name (unknown keys are refused)."""

    #: Width of the bottleneck from the pooled text to the modulation.
    width: int = Field(default=16, ge=1)


class TextToImageModulation(nn.Module):
    """The module at the language model's input (called with one FusionInputs)."""

    def __init__(self, hidden: int, width: int) -> None:
        super().__init__()
        self.down = nn.Linear(hidden, width, bias=False)
        self.up = nn.Linear(width, 2 * hidden, bias=False)
        self.gate = nn.Parameter(torch.zeros(()))

    def forward(self, inputs: FusionInputs) -> torch.Tensor:
        """The input embeddings with each image token modulated by its sample's prompt."""
        embeds = inputs.inputs_embeds
        if inputs.memory is None or not bool(inputs.image_mask.any()):
            return embeds  # decode steps: the image tokens are in the KV cache already
        text = inputs.pooled_prompt_text()
        scale, shift = self.up(torch.tanh(self.down(text))).chunk(2, dim=-1)
        fused = embeds + torch.tanh(self.gate) * (scale[:, None] * embeds + shift[:, None])
        return torch.where(inputs.image_mask[..., None], fused, embeds)


class Adapter(InputFusionAdapter):
    """$name as a FusionAdapter: attach, modules_to_save and PEFT lookup come with the base."""

    name = "$name"
    Options = Options
    options: Options

    def build_module(self, hidden: int) -> nn.Module:
        """The modulation module for a language model of width ``hidden``."""
        return TextToImageModulation(hidden, self.options.width)

    def cost(self, model: nn.Module, image_tokens: int, text_tokens: int) -> FusionCost:
        """Two small matmuls on one pooled vector per sample; elementwise work is not counted."""
        module = self.fusion_module(model)
        assert isinstance(module, TextToImageModulation)
        hidden, width = module.down.in_features, module.down.out_features
        return FusionCost(
            trainable_params=self.trainable_params(model),
            image_tokens=image_tokens,
            text_tokens=text_tokens,
            flops_per_image=2 * hidden * width + 2 * width * 2 * hidden if image_tokens else 0,
            flops_per_token=0,
        )

    def log_values(self, model: nn.Module) -> dict[str, float]:
        """``$name/gate``: tanh of the gate (0 at initialisation)."""
        module = self.fusion_module(model)
        return {f"{self.name}/gate": float(torch.tanh(module.gate.detach()))}
'''

_FUSION_TEST = '''\
"""The harness's fusion contract, on every tiny model family (identity, padding, leaks, ...)."""

from mmrl_harness.testing import check_fusion_adapter


def test_${name}_meets_the_fusion_contract() -> None:
    check_fusion_adapter("$name", options={"width": 8})
'''

_TASK_INIT = '''\
"""$name: a tasks plugin for mmrl-harness (its environment and its YAML task)."""

from pathlib import Path

import gymnasium

from mmrl_harness.tasks import TaskFolder

# Registered when the harness imports this plugin, before it resolves the YAML's plain env id.
if "$package/$env_class-v0" not in gymnasium.registry:
    gymnasium.register(id="$package/$env_class-v0", entry_point="$package.env:$env_class")

SUITE = TaskFolder(Path(__file__).parent / "yaml")
'''

_TASK_ENV = '''\
"""Which of two grey squares is brighter? A one-turn image task with a scripted oracle."""

from __future__ import annotations

from typing import Any

from gymnasium import spaces
from PIL import Image, ImageDraw

from mmrl_harness.envs.base import ImageTextEnv


class $env_class(ImageTextEnv):
    """Two squares, left and right, of different brightness; answer the brighter side."""

    action_words = ("left", "right")

    def __init__(self, image_size: int = 32, noise: float = 0.0, **kwargs: Any) -> None:
        super().__init__(image_size, noise, **kwargs)
        self.action_space = spaces.Discrete(2)
        self._levels = (0, 0)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> Any:
        """New brightness levels from the seeded generator (they always differ)."""
        super().reset(seed=seed)
        low, high = sorted(int(v) for v in self.np_random.choice(256, size=2, replace=False))
        self._levels = (low, high) if self.np_random.random() < 0.5 else (high, low)
        return self._observation(), {}

    def step(self, action: Any) -> Any:
        """One answer ends the episode: reward 1 when it names the brighter side."""
        correct = int(action) == self.oracle_action()
        info = {"success": correct, "event": "correct" if correct else "wrong"}
        return self._observation(), float(correct), True, False, info

    def oracle_action(self) -> int:
        """The brighter side's index."""
        return int(self._levels[1] > self._levels[0])

    def _draw(self) -> Image.Image:
        size = self.image_size
        image = Image.new("RGB", (size, size), (0, 0, 0))
        draw = ImageDraw.Draw(image)
        for index, level in enumerate(self._levels):
            left = index * size // 2
            draw.rectangle((left, 0, left + size // 2 - 1, size - 1), fill=(level,) * 3)
        return image

    def _text(self) -> str:
        return "which side is brighter ?"
'''

_TASK_YAML = """\
name: $name
kind: single_turn
description: Say which of two grey squares is brighter.
env: $package/$env_class-v0
env_kwargs: {image_size: 32}
prompt: "{text} answer left or right ."
"""

_TASK_TEST = '''\
"""The harness's task contract: seeding, determinism, the action map, the oracle."""

from mmrl_harness.testing import check_task


def test_${name}_meets_the_task_contract() -> None:
    check_task("$name")
'''

_ARCH_MODULE = '''\
"""$name: where a VLM family keeps its parts, for mmrl-harness's fusion adapters and LoRA.

Fill in the dotted paths (from the loaded *ForConditionalGeneration model) of your family, and
its config.model_type; see docs/plugins.md of mmrl-harness for every field.
"""

from mmrl_harness.models.anatomy import Anatomy

ANATOMY = Anatomy(
    family="$name",
    model_types=("$name",),
    vision_tower="model.vision_tower",
    projector="model.multi_modal_projector",
    language_model="model.language_model",
    decoder_layers="model.language_model.layers",
    embed_tokens="model.language_model.embed_tokens",
)
'''

_ARCH_TEST = '''\
"""The anatomy is installed, found by the registry, and names the model type."""

from mmrl_harness.registry import architectures


def test_${name}_anatomy_is_registered() -> None:
    anatomy = architectures.load("$name")
    assert anatomy.family == "$name"
    assert "$name" in anatomy.model_types
    # Once you can build a tiny model of the family, check every adapter on it too:
    # mmrl_harness.testing.check_fusion_adapter("concat", families=[tiny_loaded_model])
'''

_FILES: dict[str, dict[str, str]] = {
    "fusion": {
        "pyproject.toml": _pyproject("fusion adapter", "fusion", "Adapter"),
        "README.md": _readme(
            "fusion adapter", "fusion", "\nTrain with it: `mmrl train ... --fusion $name`.\n"
        ),
        "$package/__init__.py": _FUSION_MODULE,
        "tests/test_$package.py": _FUSION_TEST,
    },
    "task": {
        "pyproject.toml": _pyproject(
            "tasks",
            "tasks",
            "SUITE",
            '\n[tool.setuptools.package-data]\n$package = ["yaml/*.yaml"]\n',
        ),
        "README.md": _readme("tasks", "tasks", "\nEvaluate on it: `mmrl eval --task $name`.\n"),
        "$package/__init__.py": _TASK_INIT,
        "$package/env.py": _TASK_ENV,
        "$package/yaml/$name.yaml": _TASK_YAML,
        "tests/test_$package.py": _TASK_TEST,
    },
    "architecture": {
        "pyproject.toml": _pyproject("model family", "architectures", "ANATOMY"),
        "README.md": _readme("model family", "architectures", ""),
        "$package/__init__.py": _ARCH_MODULE,
        "tests/test_$package.py": _ARCH_TEST,
    },
}
