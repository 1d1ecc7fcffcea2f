"""Single-turn visual questions about drawn shapes: identify a colour or shape; count objects.

Each episode is one question: ``reset`` draws a scene, ``step(answer)`` scores one answer word
(reward 1 when right, 0 when wrong) and terminates.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
from gymnasium import spaces

from mmrl_harness.envs.base import ImageTextEnv
from mmrl_harness.envs.drawing import (
    PALETTE,
    SHAPE_NAMES,
    canvas,
    check_names,
    color_rgb,
    draw_shape,
)

DEFAULT_COLORS = ("red", "green", "blue", "yellow", "purple", "orange", "white")


class AnswerEnv(ImageTextEnv):
    """One question per episode over a closed set of answer words (the ``Discrete`` actions)."""

    def __init__(
        self,
        answer_words: tuple[str, ...],
        image_size: int,
        noise: float,
        background: str,
        render_mode: str | None,
    ):
        super().__init__(image_size, noise, render_mode)
        self.action_words = answer_words
        self.action_space = spaces.Discrete(len(answer_words))
        self.background = background
        self._background_rgb = color_rgb(background)
        self._answer = ""
        self._question = ""
        self._done = True

    def _scene(self) -> None:
        """Draw a new random scene; set ``self._answer`` and ``self._question``."""
        raise NotImplementedError

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        super().reset(seed=seed)
        self._scene()
        self._done = False
        return self._observation(), {"answer": self._answer}

    def step(self, action: Any) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        if self._done:
            raise RuntimeError("the question was answered; call reset() for the next one")
        if not self.action_space.contains(action):
            raise ValueError(f"action must be an index into {self.action_words}; got {action!r}")
        self._done = True
        correct = self.action_words[int(action)] == self._answer
        info = {
            "success": correct,
            "event": "correct" if correct else "wrong",
            "answer": self._answer,
        }
        # Answering does not change the scene: the same frame, not drawn again.
        return self._unchanged_observation(), float(correct), True, False, info

    def _text(self) -> str:
        return self._question

    def oracle_action(self) -> int:
        """The index of the right answer."""
        return self.action_words.index(self._answer)


class ColorShapeEnv(AnswerEnv):
    """One shape of one colour on a plain background; the question asks its colour or shape.

    Args:
        image_size: frame side in pixels.
        colors: colour words the shape may have (``PALETTE`` names, not the background).
        shapes: shape words the shape may be (circle, square, triangle, star).
        question: ``"color"``, ``"shape"``, or ``"any"`` (one of the two at random per episode).
        min_size, max_size: shape radius as a fraction of the image side.
        background: background colour word.
        noise: standard deviation of Gaussian pixel noise (0 = clean).
    """

    def __init__(
        self,
        image_size: int = 64,
        colors: list[str] | tuple[str, ...] = DEFAULT_COLORS,
        shapes: list[str] | tuple[str, ...] = SHAPE_NAMES,
        question: Literal["color", "shape", "any"] = "any",
        min_size: float = 0.2,
        max_size: float = 0.4,
        background: str = "black",
        noise: float = 0.0,
        render_mode: str | None = "rgb_array",
    ):
        check_names("colors", colors, tuple(PALETTE))
        check_names("shapes", shapes, SHAPE_NAMES)
        if background in colors:
            raise ValueError(
                f"background {background!r} is also a shape colour; drop it from colors"
            )
        if question not in ("color", "shape", "any"):
            raise ValueError(f"question must be 'color', 'shape' or 'any'; got {question!r}")
        if not 0 < min_size <= max_size <= 0.5:
            raise ValueError(f"need 0 < min_size <= max_size <= 0.5; got {min_size}, {max_size}")
        self.colors, self.shapes = tuple(colors), tuple(shapes)
        self.question, self.min_size, self.max_size = question, min_size, max_size
        # Answers a question about the colour may be any colour word, and likewise for shapes.
        super().__init__((*self.colors, *self.shapes), image_size, noise, background, render_mode)
        self._color = self._shape = ""
        self._center = (0.0, 0.0)
        self._radius = 0.0

    def _scene(self) -> None:
        rng, size = self.np_random, self.image_size
        self._color = self.colors[rng.integers(len(self.colors))]
        self._shape = self.shapes[rng.integers(len(self.shapes))]
        self._radius = float(rng.uniform(self.min_size, self.max_size)) * size
        lo, hi = self._radius, size - self._radius
        self._center = (float(rng.uniform(lo, hi)), float(rng.uniform(lo, hi)))
        ask = self.question if self.question != "any" else ("color", "shape")[rng.integers(2)]
        if ask == "color":
            self._answer, self._question = self._color, "what color is the shape ?"
        else:
            self._answer, self._question = self._shape, "what shape is in the image ?"

    def _draw(self) -> Any:
        image, draw = canvas(self.image_size, self._background_rgb)
        draw_shape(draw, self._shape, *self._center, self._radius, color_rgb(self._color))
        return image


class CountingEnv(AnswerEnv):
    """N non-overlapping shapes; the question asks how many (of a colour, or of a shape).

    Args:
        image_size: frame side in pixels.
        min_objects, max_objects: N is uniform in this range; answers are "0".."max_objects".
        count: ``"all"`` (every object), ``"color"`` (objects of one asked colour) or ``"shape"``
            (objects of one asked shape); the last two add distractors, a harder task.
        colors, shapes: what objects may look like.
        background: background colour word.
        noise: standard deviation of Gaussian pixel noise.
    """

    def __init__(
        self,
        image_size: int = 64,
        min_objects: int = 1,
        max_objects: int = 5,
        count: Literal["all", "color", "shape"] = "all",
        colors: list[str] | tuple[str, ...] = DEFAULT_COLORS,
        shapes: list[str] | tuple[str, ...] = SHAPE_NAMES,
        background: str = "black",
        noise: float = 0.0,
        render_mode: str | None = "rgb_array",
    ):
        if not 0 <= min_objects <= max_objects:
            raise ValueError(
                f"need 0 <= min_objects <= max_objects; got {min_objects}, {max_objects}"
            )
        if count not in ("all", "color", "shape"):
            raise ValueError(f"count must be 'all', 'color' or 'shape'; got {count!r}")
        check_names("colors", colors, tuple(PALETTE))
        check_names("shapes", shapes, SHAPE_NAMES)
        if background in colors:
            raise ValueError(
                f"background {background!r} is also a shape colour; drop it from colors"
            )
        self.min_objects, self.max_objects, self.count = min_objects, max_objects, count
        self.colors, self.shapes = tuple(colors), tuple(shapes)
        # A grid with some spare cells so placements vary; one object per cell never overlaps.
        self._cells = max(2, math.ceil(math.sqrt(max_objects * 1.5)))
        if image_size / self._cells < 6:
            raise ValueError(
                f"image_size {image_size} is too small for {max_objects} objects; "
                f"use at least {6 * self._cells} pixels"
            )
        answers = tuple(str(n) for n in range(max_objects + 1))
        super().__init__(answers, image_size, noise, background, render_mode)
        self._objects: list[tuple[str, str, float, float, float]] = []

    def _scene(self) -> None:
        rng = self.np_random
        n = int(rng.integers(self.min_objects, self.max_objects + 1))
        cell = self.image_size / self._cells
        slots = rng.choice(self._cells * self._cells, size=n, replace=False)
        self._objects = []
        for slot in np.sort(slots):
            radius = cell * float(rng.uniform(0.3, 0.42))
            slack = cell / 2 - radius  # jitter inside the cell without leaving it
            cx = (slot % self._cells + 0.5) * cell + float(rng.uniform(-slack, slack))
            cy = (slot // self._cells + 0.5) * cell + float(rng.uniform(-slack, slack))
            color = self.colors[rng.integers(len(self.colors))]
            shape = self.shapes[rng.integers(len(self.shapes))]
            self._objects.append((color, shape, cx, cy, radius))
        if self.count == "all":
            self._answer, self._question = str(n), "how many shapes are in the image ?"
        elif self.count == "color":
            asked = self.colors[rng.integers(len(self.colors))]
            self._answer = str(sum(o[0] == asked for o in self._objects))
            self._question = f"how many {asked} shapes are in the image ?"
        else:
            asked = self.shapes[rng.integers(len(self.shapes))]
            self._answer = str(sum(o[1] == asked for o in self._objects))
            self._question = f"how many {asked} shapes are in the image ?"

    def _draw(self) -> Any:
        image, draw = canvas(self.image_size, self._background_rgb)
        for color, shape, cx, cy, radius in self._objects:
            draw_shape(draw, shape, cx, cy, radius, color_rgb(color))
        return image
