"""Named, seeded perturbations of what the policy sees, for robustness evaluation.

``mmrl eval --perturb NAME[:LEVEL]`` runs every task again on the same seeds with one
perturbation applied to each observation before the processor sees it, and reports the drop
against the clean run. Image perturbations change the frame (``gaussian_noise``, ``blur``,
``resolution``, ``color_shift``); text perturbations change the rendered prompt
(``paraphrase``, ``distractor_text``). Each is a pure function of the observation, its level and
a generator seeded by (episode seed, turn), so a perturbed run is as reproducible as a clean one
and independent of the batch size. The clean path never goes through this module.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageFilter

from mmrl_harness.errors import MMRLError
from mmrl_harness.tasks.episode import Observation, StepResult

if TYPE_CHECKING:
    from mmrl_harness.tasks.episode import TaskEnv


class PerturbationError(MMRLError, ValueError):
    """An unknown perturbation name or a level it cannot take."""


ImageFn = Callable[[np.ndarray, float, np.random.Generator], np.ndarray]
TextFn = Callable[[str, np.random.Generator], str]


def gaussian_noise(image: np.ndarray, level: float, rng: np.random.Generator) -> np.ndarray:
    """Add N(0, (level x 255)^2) to every pixel and channel, clipped to [0, 255]."""
    noisy = image.astype(np.float64) + rng.normal(0.0, level * 255.0, image.shape)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def blur(image: np.ndarray, level: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian blur of radius ``level`` pixels (PIL's ``GaussianBlur``)."""
    blurred = Image.fromarray(image).filter(ImageFilter.GaussianBlur(radius=level))
    return np.asarray(blurred, dtype=np.uint8)


def resolution(image: np.ndarray, level: float, rng: np.random.Generator) -> np.ndarray:
    """Down to ``level`` x ``level`` pixels and back up (bilinear): the detail of a smaller
    frame at the original size, so the processor's input shape does not change."""
    side = int(level)
    height, width = image.shape[:2]
    small = Image.fromarray(image).resize((side, side), Image.Resampling.BILINEAR)
    return np.asarray(small.resize((width, height), Image.Resampling.BILINEAR), dtype=np.uint8)


def color_shift(image: np.ndarray, level: float, rng: np.random.Generator) -> np.ndarray:
    """Shift each colour channel by a uniform draw in [-level, level] x 255 (one draw per
    channel and turn), clipped: a tint that keeps shapes and positions."""
    shift = rng.uniform(-level, level, size=3) * 255.0
    return np.clip(np.rint(image.astype(np.float64) + shift), 0, 255).astype(np.uint8)


#: Rewordings of the phrases the built-in task prompts use; any other prompt gets a generic one.
PARAPHRASES: dict[str, tuple[str, ...]] = {
    "what is your action ?": ("which action do you take ?", "what do you do next ?"),
    "answer with one word .": ("reply with a single word .", "give a one word answer ."),
    "answer with one number .": ("reply with a single number .", "give one number as answer ."),
    "go to the goal .": ("reach the goal .", "walk to the goal ."),
    "move the marker to the target .": ("bring the marker onto the target .",),
}
GENERIC_REWORDINGS = ("task : {text}", "here is the task . {text}")
DISTRACTORS = (
    "the weather is sunny today .",
    "a cat is sleeping on the sofa .",
    "this sentence has nothing to do with the task .",
)


def paraphrase(text: str, rng: np.random.Generator) -> str:
    """Replace every known phrase by one of its rewordings (chosen by ``rng``); a prompt with
    no known phrase gets a generic rewording instead."""
    out, matched = text, False
    for phrase, options in PARAPHRASES.items():
        if phrase in out:
            out = out.replace(phrase, options[int(rng.integers(len(options)))])
            matched = True
    if matched:
        return out
    return GENERIC_REWORDINGS[int(rng.integers(len(GENERIC_REWORDINGS)))].format(text=text)


def distractor_text(text: str, rng: np.random.Generator) -> str:
    """Append one irrelevant sentence (chosen by ``rng``) to the prompt."""
    return f"{text} {DISTRACTORS[int(rng.integers(len(DISTRACTORS)))]}"


@dataclass(frozen=True)
class Perturbation:
    """A registered perturbation: an image or a text function, and its level if it takes one."""

    name: str
    image: ImageFn | None = None
    text: TextFn | None = None
    default_level: float | None = None
    minimum: float = 0.0
    integer: bool = False  # the level is a whole number (a pixel size)
    level: float | None = None

    @property
    def key(self) -> str:
        """The results key: ``name:level`` for levelled ones (``blur:1.0``, ``resolution:16``),
        else the name (``paraphrase``)."""
        level = self.level if self.level is not None else self.default_level
        if level is None:
            return self.name
        return f"{self.name}:{int(level)}" if self.integer else f"{self.name}:{float(level)!r}"

    def apply(self, observation: Observation, seed: int) -> Observation:
        """The observation as the policy sees it under this perturbation (a new object)."""
        rng = np.random.default_rng([seed, observation.step])
        level = self.level if self.level is not None else self.default_level
        if self.image is not None and level is not None:
            return dataclasses.replace(observation, image=self.image(observation.image, level, rng))
        if self.text is not None:
            return dataclasses.replace(observation, text=self.text(observation.text, rng))
        return observation


PERTURBATIONS: dict[str, Perturbation] = {
    p.name: p
    for p in (
        Perturbation("gaussian_noise", image=gaussian_noise, default_level=0.1),
        Perturbation("blur", image=blur, default_level=1.0),
        Perturbation("resolution", image=resolution, default_level=16, minimum=1, integer=True),
        Perturbation("color_shift", image=color_shift, default_level=0.2),
        Perturbation("paraphrase", text=paraphrase),
        Perturbation("distractor_text", text=distractor_text),
    )
}


def parse_perturbation(spec: str) -> Perturbation:
    """``NAME[:LEVEL]`` -> the registered perturbation at that level (its default if none)."""
    name, _, level_text = spec.partition(":")
    base = PERTURBATIONS.get(name.strip())
    if base is None:
        raise PerturbationError(
            f"unknown perturbation {name!r} in {spec!r}; use one of {sorted(PERTURBATIONS)}, "
            "with an optional :LEVEL for the image ones (e.g. blur:1.5)."
        )
    if base.default_level is None:
        if level_text:
            raise PerturbationError(f"{name!r} takes no level; got {spec!r}. Give just {name!r}.")
        return base
    try:
        level = float(level_text) if level_text else base.default_level
    except ValueError:
        raise PerturbationError(f"the level in {spec!r} is not a number; e.g. {name}:0.5") from None
    whole = not base.integer or float(level).is_integer()
    if not np.isfinite(level) or level < base.minimum or level == 0 or not whole:
        raise PerturbationError(
            f"level {level_text!r} of {name!r} must be a finite "
            f"{'whole number' if base.integer else 'number'} > 0 (at least {base.minimum:g}); "
            f"e.g. {name}:{base.default_level:g}."
        )
    return dataclasses.replace(base, level=level)


class PerturbedEnv:
    """A task environment whose observations pass through one perturbation (reset and step)."""

    def __init__(self, env: TaskEnv, perturbation: Perturbation) -> None:
        self.env = env
        self.task = env.task
        self.perturbation = perturbation
        self._seed = 0

    @property
    def action_words(self) -> tuple[str, ...]:
        """The wrapped environment's action words."""
        return self.env.action_words

    @property
    def system_prompt(self) -> str | None:
        """The wrapped environment's system prompt (not perturbed)."""
        return self.env.system_prompt

    @property
    def optimal_length(self) -> int | None:
        """The wrapped environment's optimal episode length, if it knows one."""
        return getattr(self.env, "optimal_length", None)

    def reset(self, seed: int | None = None) -> Observation:
        """Reset the wrapped env; the perturbation's generator is keyed by this seed."""
        self._seed = 0 if seed is None else seed
        return self.perturbation.apply(self.env.reset(seed=seed), self._seed)

    def step(self, text: str) -> StepResult:
        """Step the wrapped env and perturb the next observation."""
        result = self.env.step(text)
        observation = self.perturbation.apply(result.observation, self._seed)
        return dataclasses.replace(result, observation=observation)

    def close(self) -> None:
        """Close the wrapped env."""
        self.env.close()

    def __getattr__(self, name: str) -> Any:
        # Anything else (oracle text, counters) is the wrapped env's.
        return getattr(self.env, name)
