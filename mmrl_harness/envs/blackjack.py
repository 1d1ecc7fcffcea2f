"""Blackjack drawn as cards: Gymnasium's ``Blackjack-v1`` rules, rendered with PIL.

The game itself is Gymnasium's ``BlackjackEnv`` (so a seed and an action sequence give exactly the
outcome ``Blackjack-v1`` gives); this env only draws the hands as number cards and words the
state. Reward: +1 win, -1 loss, 0 draw (1.5 for a natural when ``natural=True``).
"""

from __future__ import annotations

from typing import Any

from gymnasium import spaces
from gymnasium.envs.toy_text.blackjack import BlackjackEnv as _GymBlackjack
from gymnasium.envs.toy_text.blackjack import sum_hand

from mmrl_harness.envs.base import ImageTextEnv
from mmrl_harness.envs.drawing import canvas, color_rgb, draw_centered_text

STAND, HIT = 0, 1
_FELT = (40, 110, 60)


class BlackjackCardsEnv(ImageTextEnv):
    """The dealer's cards on top (one face down until the player stands), the player's below.

    Args:
        image_size: frame side in pixels (below ~48 the numbers blur).
        natural: pay 1.5 for a natural blackjack (Gymnasium's ``natural``; ignored under sab).
        sab: Sutton & Barto's rules, where a natural wins outright (Gymnasium's ``sab``; on by
            default, as in ``Blackjack-v1``).
        state_in_text: also state the player's total and the dealer's card in the text.
        stand_threshold: the scripted policy hits below this total.
        noise: standard deviation of Gaussian pixel noise.
    """

    action_words = ("stand", "hit")

    def __init__(
        self,
        image_size: int = 64,
        natural: bool = False,
        sab: bool = True,
        state_in_text: bool = False,
        stand_threshold: int = 17,
        noise: float = 0.0,
        render_mode: str | None = "rgb_array",
    ):
        super().__init__(image_size, noise, render_mode)
        self.action_space = spaces.Discrete(2)
        self.state_in_text = state_in_text
        self.stand_threshold = stand_threshold
        self._game = _GymBlackjack(natural=natural, sab=sab)
        self._over = False

    @property
    def player(self) -> list[int]:
        """The player's cards (1 = ace, 10 = ten or a face card)."""
        return list(self._game.player)

    @property
    def dealer(self) -> list[int]:
        """The dealer's cards; the second is face down until the player stands."""
        return list(self._game.dealer)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        super().reset(seed=seed)
        # The inner game owns the card draws; seeding it (not just us) keeps Blackjack-v1 parity.
        inner_seed = seed if seed is not None else int(self.np_random.integers(2**31))
        self._game.reset(seed=inner_seed)
        self._over = False
        return self._observation(), {"player_sum": sum_hand(self._game.player)}

    def step(self, action: Any) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        if not self.action_space.contains(action):
            raise ValueError(f"action must be 0 (stand) or 1 (hit); got {action!r}")
        _, reward, terminated, truncated, _ = self._game.step(int(action))
        self._over = bool(terminated)
        if not terminated:
            event = "card"
        elif reward > 0:
            event = "win"
        elif reward < 0:
            event = "bust" if int(action) == HIT else "loss"
        else:
            event = "draw"
        info = {
            "success": bool(terminated and reward > 0),
            "event": event,
            "player_sum": sum_hand(self._game.player),
        }
        return self._observation(), float(reward), bool(terminated), bool(truncated), info

    def oracle_action(self) -> int:
        """A simple threshold strategy (Blackjack has no policy that always wins)."""
        return HIT if sum_hand(self._game.player) < self.stand_threshold else STAND

    def _draw(self) -> Any:
        size = self.image_size
        image, draw = canvas(size, _FELT)
        dealer = self._game.dealer
        shown = dealer if self._over else [dealer[0], 0]  # 0 marks the face-down card
        for row, hand in enumerate((shown, self._game.player)):
            n = max(len(hand), 3)  # keep cards the same size for small hands
            width = min(size * 0.9 / n, size * 0.28)
            height = min(width * 1.45, size * 0.42)
            top = size * (0.04 + 0.5 * row)
            left = (size - width * len(hand)) / 2
            for i, card in enumerate(hand):
                x0 = left + i * width + width * 0.06
                box = (x0, top, x0 + width * 0.88, top + height)
                if card == 0:
                    draw.rectangle(box, fill=color_rgb("blue"), outline=color_rgb("white"))
                    continue
                draw.rectangle(box, fill=color_rgb("white"), outline=color_rgb("black"))
                label = "A" if card == 1 else str(card)
                draw_centered_text(
                    draw,
                    label,
                    (box[0] + box[2]) / 2,
                    (box[1] + box[3]) / 2,
                    max(6, int(width * 0.55)),
                    color_rgb("black"),
                )
        return image

    def _text(self) -> str:
        if not self.state_in_text:
            return "you are the player ."
        # Gymnasium's observation convention: the total counts a usable ace as 11, the dealer's
        # showing card is 1-10 (1 = ace).
        total, card = sum_hand(self._game.player), self._game.dealer[0]
        return f"your total is {total} . the dealer card is {card} ."
