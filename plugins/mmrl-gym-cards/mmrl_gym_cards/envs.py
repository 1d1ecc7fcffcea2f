"""EZPoints and Points24 after RL4VLM's gym_cards: build a formula over turns from drawn cards.

Each turn the agent says one word of a formula (a card's value, an operator, a bracket) or
``equals`` to submit it. The cards are drawn as playing cards (used ones greyed out) and the text
holds the formula so far. Rewards, as in gym_cards: -1 for an illegal word (a card not in hand or
already used, an operator where a number belongs...; the formula is unchanged), 0 for a legal one,
and on ``equals`` +10 when the formula uses every card once and equals the target (the episode
ends, ``success``), else -1 (the episode ends).
"""

from __future__ import annotations

from typing import Any

from gymnasium import spaces
from PIL import ImageDraw

from mmrl_gym_cards.formula import CLOSE, EQUALS, OPEN, OPERATORS, FormulaError, evaluate, solve
from mmrl_harness.envs.base import ImageTextEnv
from mmrl_harness.envs.drawing import canvas, color_rgb, draw_centered_text

RANKS = ("A", "2", "3", "4", "5", "6", "7", "8", "9", "10", "J", "Q", "K")
SUITS = ("red", "black")
GOAL_REWARD, ILLEGAL_REWARD = 10.0, -1.0


class CardFormulaEnv(ImageTextEnv):
    """Make ``target`` from ``num_cards`` cards with ``operators``, one word per turn.

    Args:
        target: the value the formula must reach (12 in EZPoints, 24 in Points24).
        num_cards: cards in hand, each used exactly once.
        operators: the operator words allowed (a subset of plus, minus, times, over).
        max_rank: cards are drawn from ranks 1..max_rank (A = 1; difficulty: fewer ranks).
        face_cards_as_ten: J, Q, K count 10 (gym_cards' rule); else 11, 12, 13.
        solvable_only: redraw hands that have no solution.
        brackets: allow ``open`` and ``close``.
        state_in_text: also write the cards' values in the text (a text-only control).
        image_size: frame side in pixels; noise: Gaussian pixel-noise standard deviation.
    """

    def __init__(
        self,
        target: int = 12,
        num_cards: int = 2,
        operators: tuple[str, ...] | list[str] = ("plus", "times"),
        max_rank: int = 13,
        face_cards_as_ten: bool = True,
        solvable_only: bool = True,
        brackets: bool = False,
        state_in_text: bool = False,
        image_size: int = 64,
        noise: float = 0.0,
        render_mode: str | None = "rgb_array",
    ):
        super().__init__(image_size, noise, render_mode)
        unknown = [op for op in operators if op not in OPERATORS]
        if unknown or not operators:
            raise ValueError(
                f"operators must be a non-empty subset of {list(OPERATORS)}; got {operators!r}"
            )
        if not 1 <= max_rank <= 13 or num_cards < 1:
            raise ValueError(
                f"need 1 <= max_rank <= 13 and num_cards >= 1; got {max_rank}, {num_cards}"
            )
        self.target, self.num_cards, self.max_rank = target, num_cards, max_rank
        self.operators = tuple(operators)
        self.face_cards_as_ten, self.solvable_only = face_cards_as_ten, solvable_only
        self.brackets, self.state_in_text = brackets, state_in_text
        top = 10 if face_cards_as_ten else 13
        numbers = tuple(str(v) for v in range(1, min(max_rank, top) + 1))
        self.action_words = (
            *numbers,
            *self.operators,
            *((OPEN, CLOSE) if brackets else ()),
            EQUALS,
        )
        self.action_space = spaces.Discrete(len(self.action_words))
        self.ranks: list[int] = []
        self.suits: list[str] = []
        self.formula: list[str] = []
        #: A solution of the hand (the oracle's plan), or None when it has none.
        self.plan: tuple[str, ...] | None = None

    # -- rules -----------------------------------------------------------------------------------
    def value(self, rank: int) -> int:
        """A card's value: its rank, face cards 10 unless ``face_cards_as_ten`` is off."""
        return min(rank, 10) if self.face_cards_as_ten else rank

    @property
    def remaining(self) -> list[int]:
        """Values of the cards not yet used in the formula."""
        left = [self.value(r) for r in self.ranks]
        for word in self.formula:
            if word.isdigit():
                left.remove(int(word))
        return left

    def legal(self, word: str) -> bool:
        """Whether ``word`` may come next (``equals`` only once the formula is complete)."""
        last = self.formula[-1] if self.formula else None
        operand_next = last is None or last in OPERATORS or last == OPEN
        depth = self.formula.count(OPEN) - self.formula.count(CLOSE)
        if word.isdigit():
            return operand_next and int(word) in self.remaining
        if word in OPERATORS:
            return not operand_next
        if word == OPEN:
            return self.brackets and operand_next
        if word == CLOSE:
            return self.brackets and not operand_next and depth > 0
        return word == EQUALS and not operand_next and depth == 0 and not self.remaining

    # -- Gymnasium API -------------------------------------------------------------------------
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        super().reset(seed=seed)
        for _ in range(1000):  # solvable hands are common; 1000 draws never run out in practice
            self.ranks = [
                int(r) for r in self.np_random.integers(1, self.max_rank + 1, self.num_cards)
            ]
            values = [self.value(r) for r in self.ranks]
            self.plan = solve(values, self.target, self.operators, self.brackets)
            if self.plan is not None or not self.solvable_only:
                break
        self.suits = [SUITS[int(s)] for s in self.np_random.integers(0, 2, self.num_cards)]
        self.formula = []
        return self._observation(), {"solvable": self.plan is not None}

    def step(self, action: Any) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        if not self.action_space.contains(action):
            raise ValueError(f"action must be an index into {self.action_words}; got {action!r}")
        word = self.action_words[int(action)]
        if not self.legal(word):
            info = {"success": False, "event": "illegal", "formula": " ".join(self.formula)}
            return self._observation(), ILLEGAL_REWARD, False, False, info
        if word != EQUALS:
            self.formula.append(word)
            info = {"success": False, "event": "word", "formula": " ".join(self.formula)}
            return self._observation(), 0.0, False, False, info
        try:
            correct = evaluate(self.formula) == self.target
        except FormulaError:  # e.g. a division by zero
            correct = False
        info = {
            "success": correct,
            "event": "goal" if correct else "wrong",
            "formula": " ".join(self.formula),
        }
        return self._observation(), GOAL_REWARD if correct else ILLEGAL_REWARD, True, False, info

    def oracle_action(self) -> int:
        """The next word of the planned solution; ``equals`` once it is said or when it cannot be.

        From the start of an episode the oracle always solves a solvable hand; after another
        policy's words leave the plan, it submits (a scripted baseline, not a search).
        """
        n, plan = len(self.formula), self.plan
        if plan is not None and tuple(self.formula) == plan[:n] and n < len(plan):
            return self.action_words.index(plan[n])
        return self.action_words.index(EQUALS)

    # -- drawing -------------------------------------------------------------------------------
    def _draw(self) -> Any:
        size = self.image_size
        image, draw = canvas(size, color_rgb("green"))
        width = size / (self.num_cards + 1)
        used = list(self.remaining)
        for i, (rank, suit) in enumerate(zip(self.ranks, self.suits, strict=True)):
            x0 = width * (i + 0.5) + width * 0.05 * i
            is_free = self.value(rank) in used
            if is_free:
                used.remove(self.value(rank))
            self._card(draw, (x0, size * 0.25, x0 + width * 0.9, size * 0.75), rank, suit, is_free)
        return image

    def _card(
        self, draw: ImageDraw.ImageDraw, box: tuple[float, ...], rank: int, suit: str, free: bool
    ) -> None:
        face = color_rgb("white") if free else color_rgb("gray")
        draw.rectangle(box, fill=face, outline=color_rgb("black"))
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        text_size = max(6, int((box[2] - box[0]) * 0.6))
        draw_centered_text(draw, RANKS[rank - 1], cx, cy, text_size, color_rgb(suit))

    def _text(self) -> str:
        said = " ".join(self.formula) if self.formula else "nothing"
        cards = ""
        if self.state_in_text:
            cards = " the cards are " + " , ".join(str(self.value(r)) for r in self.ranks) + " ."
        return f"make {self.target} with every card once .{cards} the formula is {said} ."


class EZPointsEnv(CardFormulaEnv):
    """gym_cards' EZPoints: two cards, plus and times, make 12."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**{"target": 12, "num_cards": 2, "operators": ("plus", "times"), **kwargs})


class Points24Env(CardFormulaEnv):
    """gym_cards' Points24: four cards, the four operations and brackets, make 24."""

    def __init__(self, **kwargs: Any) -> None:
        defaults = {"target": 24, "num_cards": 4, "operators": tuple(OPERATORS), "brackets": True}
        super().__init__(**{**defaults, **kwargs})
