"""EZPoints and Points24: formulas, rules, oracles, determinism, and the tasks through the harness."""

from __future__ import annotations

from fractions import Fraction

import gymnasium as gym
import mmrl_gym_cards  # noqa: F401  (registers the env ids)
import numpy as np
import pytest
from mmrl_gym_cards.envs import GOAL_REWARD, ILLEGAL_REWARD, CardFormulaEnv
from mmrl_gym_cards.formula import FormulaError, evaluate, solve

OPS = ("plus", "minus", "times", "over")


def test_formulas_follow_precedence_and_brackets() -> None:
    assert evaluate(["2", "plus", "3", "times", "4"]) == 14
    assert evaluate(["open", "2", "plus", "3", "close", "times", "4"]) == 20
    assert evaluate(["8", "over", "open", "3", "minus", "8", "over", "3", "close"]) == 24
    assert evaluate(["1", "over", "3"]) == Fraction(1, 3)
    with pytest.raises(FormulaError, match="division by zero"):
        evaluate(["1", "over", "open", "2", "minus", "2", "close"])
    with pytest.raises(FormulaError):
        evaluate(["1", "plus"])


def test_solver_finds_the_hard_hand_and_refuses_an_impossible_one() -> None:
    words = solve([8, 3, 8, 3], 24, OPS)
    assert words is not None and evaluate(words) == 24
    assert sorted(w for w in words if w.isdigit()) == ["3", "3", "8", "8"]
    assert solve([1, 1, 1, 1], 24, OPS) is None
    # Without brackets only formulas spelt without them count: 3 x 8 needs none.
    assert solve([3, 8], 24, ("plus", "times"), brackets=False) == ("3", "times", "8")


def _word(env: CardFormulaEnv, word: str) -> int:
    return env.action_words.index(word)


def test_illegal_words_cost_one_and_leave_the_formula() -> None:
    env = gym.make("gym_cards/EZPoints-v0").unwrapped
    env.reset(seed=3)
    held = {str(env.value(r)) for r in env.ranks}
    missing = next(w for w in env.action_words if w.isdigit() and w not in held)
    for word in ("plus", "equals", missing):
        _, reward, terminated, _, info = env.step(_word(env, word))
        assert (reward, terminated, info["event"]) == (ILLEGAL_REWARD, False, "illegal")
    assert env.formula == []


def test_a_wrong_formula_ends_the_episode() -> None:
    env = gym.make("gym_cards/EZPoints-v0", solvable_only=False).unwrapped
    for seed in range(200):  # find a hand where "a plus b" is not 12
        env.reset(seed=seed)
        a, b = (env.value(r) for r in env.ranks)
        if a + b != 12:
            break
    for word in (str(a), "plus", str(b)):
        assert env.step(_word(env, word))[1] == 0.0
    _, reward, terminated, _, info = env.step(_word(env, "equals"))
    assert (reward, terminated, info["success"], info["event"]) == (
        ILLEGAL_REWARD,
        True,
        False,
        "wrong",
    )


@pytest.mark.parametrize(
    ("env_id", "episodes"), [("gym_cards/EZPoints-v0", 20), ("gym_cards/Points24-v0", 5)]
)
def test_the_oracle_solves_every_episode(env_id: str, episodes: int) -> None:
    env = gym.make(env_id).unwrapped
    for seed in range(episodes):
        env.reset(seed=seed)
        total, terminated = 0.0, False
        while not terminated:
            _, reward, terminated, _, info = env.step(env.oracle_action())
            total += reward
        assert info["success"] and total == GOAL_REWARD, (seed, env.formula)


def test_same_seed_same_cards_and_image() -> None:
    env = gym.make("gym_cards/Points24-v0").unwrapped
    first, _ = env.reset(seed=11)
    ranks = list(env.ranks)
    again, _ = env.reset(seed=11)
    assert env.ranks == ranks and np.array_equal(first["image"], again["image"])
    other, _ = env.reset(seed=12)
    assert not np.array_equal(first["image"], other["image"])


def test_difficulty_knobs_shape_the_hands_and_words() -> None:
    env = gym.make("gym_cards/Points24-v0", max_rank=6, state_in_text=True).unwrapped
    obs, _ = env.reset(seed=0)
    assert all(1 <= r <= 6 for r in env.ranks)
    assert env.action_words[:6] == ("1", "2", "3", "4", "5", "6") and "7" not in env.action_words
    assert "the cards are" in obs["text"]
    with pytest.raises(ValueError, match="operators must be"):
        gym.make("gym_cards/EZPoints-v0", operators=["modulo"])


def test_tasks_run_through_the_harness_with_the_oracle() -> None:
    from mmrl_harness.tasks import get_task, make_task_env

    for name, episodes in (("ezpoints", 3), ("points24_easy", 2)):
        env = make_task_env(get_task(name))
        for seed in range(episodes):
            obs = env.reset(seed=seed)
            assert obs.image.shape == (64, 64, 3) and "what is your next word ?" in obs.text
            result = None
            while result is None or not (result.terminated or result.truncated):
                result = env.step(env.oracle())
            assert result.info.success and env.episode_return == GOAL_REWARD
