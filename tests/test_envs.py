"""The built-in environments, through Gymnasium's own API (no task layer)."""

from __future__ import annotations

import hashlib
from collections import deque
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from PIL import Image

import mmrl_harness.envs  # noqa: F401  (registers mmrl/*)
from mmrl_harness.envs import base as env_base
from mmrl_harness.envs.drawing import PALETTE

DRAWN_ENVS = [
    "mmrl/ColorShape-v0",
    "mmrl/Counting-v0",
    "mmrl/NumberLine-v0",
    "mmrl/Blackjack-v0",
    "mmrl/MiniGridNav-v0",
]
#: Per-env arguments for the shared tests: a MiniGrid map whose start depends on the seed.
SHARED_KWARGS: dict[str, dict[str, object]] = {
    "mmrl/MiniGridNav-v0": {"env_id": "MiniGrid-Empty-Random-6x6-v0"},
}


def make(gym_id: str, /, **kwargs: object) -> gym.Env:
    kwargs = {**SHARED_KWARGS.get(gym_id, {}), **kwargs}
    return gym.make(gym_id, render_mode="rgb_array", disable_env_checker=True, **kwargs)


@pytest.mark.parametrize("env_id", DRAWN_ENVS)
def test_passes_gymnasium_env_checker(env_id: str) -> None:
    check_env(make(env_id).unwrapped)


@pytest.mark.parametrize("env_id", DRAWN_ENVS)
def test_observation_is_uint8_image_plus_text_and_render_returns_it(env_id: str) -> None:
    env = make(env_id, image_size=48)
    obs, _ = env.reset(seed=0)
    assert obs["image"].dtype == np.uint8 and obs["image"].shape == (48, 48, 3)
    assert isinstance(obs["text"], str) and obs["text"]
    assert np.array_equal(env.render(), obs["image"])
    assert env.observation_space.contains(obs)


@pytest.mark.parametrize("env_id", DRAWN_ENVS)
def test_same_seed_same_episode(env_id: str) -> None:
    def episode(seed: int) -> list[tuple[bytes, str, float]]:
        env = make(env_id)
        obs, _ = env.reset(seed=seed)
        out = [(obs["image"].tobytes(), obs["text"], 0.0)]
        for _ in range(3):
            obs, reward, terminated, truncated, _ = env.step(env.unwrapped.oracle_action())
            out.append((obs["image"].tobytes(), obs["text"], float(reward)))
            if terminated or truncated:
                break
        return out

    assert episode(7) == episode(7)
    assert any(episode(s) != episode(7) for s in (8, 9, 10))


@pytest.mark.parametrize("env_id", ["mmrl/ColorShape-v0", "mmrl/Counting-v0"])
def test_pixel_noise_is_seeded(env_id: str) -> None:
    a = make(env_id, noise=20.0).reset(seed=3)[0]["image"]
    b = make(env_id, noise=20.0).reset(seed=3)[0]["image"]
    clean = make(env_id).reset(seed=3)[0]["image"]
    assert np.array_equal(a, b) and not np.array_equal(a, clean)


# -- frames drawn once -----------------------------------------------------------------------
#: sha256 of every frame, text and reward of 8 seeded oracle episodes at 32 px, recorded on the
#: tree before frames were memoised and answer steps stopped redrawing (commit f8a974f): the
#: speed-ups must not change a single byte. A Pillow upgrade that draws differently changes
#: these too; re-record them then, after checking the frames still look right.
FRAME_DIGESTS = {
    ("mmrl/ColorShape-v0", 0.0): "f945f945d6f9d652a4b674a8c35fd53ed64184570ae12747e75fa2b6beac81c0",
    (
        "mmrl/ColorShape-v0",
        12.0,
    ): "06a62d9f02c5b7052bfe3a91dc7aa7ea6f2d3afdee9d00746f7a8f2ccc76225a",
    ("mmrl/Counting-v0", 0.0): "693fc28f558f3eac68e4fdb4eb964c2568a246bad52b90235907facad751b8a2",
    ("mmrl/Counting-v0", 12.0): "85c1f0d118c86df4ff5bbb0122b3e429e29d771e2bfb54e57728fe491a8e041d",
    ("mmrl/NumberLine-v0", 0.0): "ddd7b45caca8a3fdadbc68561e640b4cf183394052b4303aa9a1c09fa139239e",
    (
        "mmrl/NumberLine-v0",
        12.0,
    ): "91200cef9d3d97d2e33188b5541e780c24fa9bec6a5a4db2e39916d11026b057",
    ("mmrl/Blackjack-v0", 0.0): "df1a50a59d9ed26d7007b9e776f18977db62f0829d20b68161d9fc80652d131b",
    ("mmrl/Blackjack-v0", 12.0): "c456cab45c4e7efa1e342131ac9cde82c403ff119a0afadf76bc4ea49722b4fa",
    (
        "mmrl/MiniGridNav-v0",
        0.0,
    ): "c4e52226068de7eeeaf70cdd098a1d5e47310618fb58113ab69930f497adf538",
    (
        "mmrl/MiniGridNav-v0",
        12.0,
    ): "12b4c98abd8a829a042479f900fb567b31ff85f6f9aebcbb1a76fe91a05c2bbf",
}


@pytest.mark.parametrize(("env_id", "noise"), list(FRAME_DIGESTS))
def test_frames_are_byte_identical_to_the_unmemoised_drawing(env_id: str, noise: float) -> None:
    env = make(env_id, image_size=32, noise=noise)
    digest = hashlib.sha256()
    for seed in range(8):
        obs, _ = env.reset(seed=seed)
        digest.update(obs["image"].tobytes() + obs["text"].encode())
        for _ in range(4):
            obs, reward, terminated, truncated, _ = env.step(env.unwrapped.oracle_action())
            digest.update(obs["image"].tobytes() + obs["text"].encode() + repr(reward).encode())
            if terminated or truncated:
                break
    assert digest.hexdigest() == FRAME_DIGESTS[(env_id, noise)]


@pytest.mark.parametrize("line_length", [2, 5, 9])
def test_numberline_memoised_frames_equal_freshly_drawn_ones(line_length: int) -> None:
    env = make("mmrl/NumberLine-v0", line_length=line_length, image_size=40)
    env.reset(seed=0)
    line = env.unwrapped
    for target in range(line_length):
        for position in range(line_length):
            line.target, line.position = target, position
            fresh = line._clean_frame()  # drawn now, bypassing the memo
            assert np.array_equal(line._observation()["image"], fresh)  # first: drawn, stored
            assert np.array_equal(line._observation()["image"], fresh)  # then: from the memo
    assert (type(line), 40, (line_length, 0, 0)) in env_base._FRAMES


def test_observations_cannot_write_into_the_frame_memo() -> None:
    env = make("mmrl/NumberLine-v0", line_length=5)
    first, _ = env.reset(seed=4)
    pristine = first["image"].copy()
    first["image"][:] = 0  # a user may scribble on what they were given
    again, _ = env.reset(seed=4)
    assert np.array_equal(again["image"], pristine)
    assert again["image"] is not first["image"]
    line = env.unwrapped
    cached = env_base._FRAMES[(type(line), line.image_size, line._frame_key())]
    with pytest.raises(ValueError, match="WRITEABLE"):
        cached.setflags(write=True)  # backed by bytes: the memo cannot be made writeable


def test_answer_step_shows_the_same_frame_as_a_new_array() -> None:
    env = make("mmrl/ColorShape-v0", noise=0.0)
    obs, _ = env.reset(seed=5)
    after, *_ = env.step(env.unwrapped.oracle_action())
    assert np.array_equal(after["image"], obs["image"]) and after["image"] is not obs["image"]


def test_environments_get_equal_spaces_that_share_no_state() -> None:
    a, b = make("mmrl/ColorShape-v0").unwrapped, make("mmrl/ColorShape-v0").unwrapped
    assert a.observation_space == b.observation_space
    box_a, box_b = a.observation_space["image"], b.observation_space["image"]
    assert not np.shares_memory(box_a.low, box_b.low)
    assert not np.shares_memory(box_a.high, box_b.high)
    a.observation_space.seed(0)
    first = a.observation_space["text"].sample()
    a.observation_space.seed(0)
    b.observation_space.seed(1)  # a shared generator would be re-seeded (and drawn from) here
    b.observation_space["text"].sample()
    assert a.observation_space["text"].sample() == first


# -- colour / shape ------------------------------------------------------------------------------
def test_color_question_answered_with_the_drawn_color() -> None:
    env = make("mmrl/ColorShape-v0", question="color", colors=["red", "blue"], shapes=["square"])
    for seed in range(10):
        obs, info = env.reset(seed=seed)
        assert obs["text"] == "what color is the shape ?"
        center = obs["image"][24:40, 24:40].reshape(-1, 3)
        drawn = [c for c in ("red", "blue") if (center == PALETTE[c]).all(axis=1).any()]
        assert info["answer"] in drawn or drawn == []  # the shape may sit off-centre
        words = env.unwrapped.action_words
        _, reward, terminated, _, step_info = env.step(words.index(info["answer"]))
        assert (reward, terminated, step_info["success"]) == (1.0, True, True)


def test_wrong_answer_scores_zero_and_episode_ends() -> None:
    env = make("mmrl/ColorShape-v0", question="shape")
    _, info = env.reset(seed=1)
    wrong = next(w for w in env.unwrapped.action_words if w != info["answer"])
    _, reward, terminated, _, step_info = env.step(env.unwrapped.action_words.index(wrong))
    assert (reward, terminated, step_info["event"]) == (0.0, True, "wrong")
    with pytest.raises(RuntimeError, match="reset"):
        env.step(0)


def test_background_color_cannot_be_a_shape_color() -> None:
    with pytest.raises(ValueError, match="background 'black'"):
        make("mmrl/ColorShape-v0", colors=["black", "red"])


# -- counting ----------------------------------------------------------------------------------
def _blobs(image: np.ndarray, background: tuple[int, int, int]) -> int:
    """Connected components of non-background pixels (4-neighbourhood)."""
    mask = ~(image == background).all(axis=-1)
    seen = np.zeros_like(mask)
    count = 0
    for y, x in zip(*np.nonzero(mask), strict=True):
        if seen[y, x]:
            continue
        count += 1
        queue = deque([(y, x)])
        seen[y, x] = True
        while queue:
            cy, cx = queue.popleft()
            for ny, nx in ((cy + 1, cx), (cy - 1, cx), (cy, cx + 1), (cy, cx - 1)):
                inside = 0 <= ny < mask.shape[0] and 0 <= nx < mask.shape[1]
                if inside and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    queue.append((ny, nx))
    return count


def test_counting_answer_equals_the_shapes_drawn() -> None:
    env = make("mmrl/Counting-v0", image_size=96, min_objects=0, max_objects=6, shapes=["square"])
    answers = set()
    for seed in range(12):
        obs, info = env.reset(seed=seed)
        assert _blobs(obs["image"], PALETTE["black"]) == int(info["answer"])
        answers.add(info["answer"])
    assert len(answers) >= 4  # the count really varies


def test_counting_by_color_counts_only_that_color() -> None:
    env = make("mmrl/Counting-v0", count="color", max_objects=8, colors=["red", "blue"])
    for seed in range(8):
        obs, info = env.reset(seed=seed)
        asked = obs["text"].split()[2]
        state = env.unwrapped._objects
        assert int(info["answer"]) == sum(o[0] == asked for o in state)


# -- number line -------------------------------------------------------------------------------
def _marker_x(image: np.ndarray) -> float:
    xs = np.nonzero((image == PALETTE["blue"]).all(axis=-1))[1]
    return float(xs.mean())


def test_numberline_rewards_follow_rl4vlm() -> None:
    env = make("mmrl/NumberLine-v0", line_length=7)
    env.reset(seed=0)
    line = env.unwrapped
    line.position, line.target = 3, 5
    assert env.step(0)[1:3] == (-1.0, False)  # away from the target
    assert env.step(1)[1:3] == (0.0, False)  # back: progress, not there yet
    assert env.step(1)[1:3] == (0.0, False)
    _, reward, terminated, _, info = env.step(1)
    assert (reward, terminated, info["success"], info["event"]) == (1.0, True, True, "goal")


def test_numberline_move_against_the_end_is_no_progress() -> None:
    env = make("mmrl/NumberLine-v0", line_length=5)
    env.reset(seed=0)
    env.unwrapped.position, env.unwrapped.target = 0, 3
    _, reward, _, _, info = env.step(0)
    assert (reward, info["event"], env.unwrapped.position) == (-1.0, "no_progress", 0)


def test_numberline_marker_moves_in_the_image() -> None:
    env = make("mmrl/NumberLine-v0", line_length=5, image_size=64)
    env.reset(seed=0)
    env.unwrapped.position, env.unwrapped.target = 1, 4
    before = _marker_x(env.unwrapped._observation()["image"])
    after = _marker_x(env.step(1)[0]["image"])
    assert after > before + 5


def test_numberline_state_in_text_states_positions() -> None:
    env = make("mmrl/NumberLine-v0", state_in_text=True)
    obs, _ = env.reset(seed=2)
    u = env.unwrapped
    assert obs["text"] == f"the marker is at {u.position} . the target is at {u.target} ."


# -- blackjack ---------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(30))  # seed 25 deals the player a natural
def test_blackjack_matches_gymnasium_blackjack_v1(seed: int) -> None:
    ours, theirs = make("mmrl/Blackjack-v0"), gym.make("Blackjack-v1")
    ours.reset(seed=seed)
    (player_sum, dealer_card, _), _ = theirs.reset(seed=seed)
    assert (
        sum(ours.unwrapped.player)
        + (10 if 1 in ours.unwrapped.player and sum(ours.unwrapped.player) + 10 <= 21 else 0),
        ours.unwrapped.dealer[0],
    ) == (player_sum, dealer_card)
    done = False
    while not done:
        action = ours.unwrapped.oracle_action()
        _, r1, t1, _, _ = ours.step(action)
        _, r2, t2, _, _ = theirs.step(action)
        assert (r1, t1) == (r2, t2)
        done = t1


def test_blackjack_hit_draws_a_card_in_the_image() -> None:
    env = make("mmrl/Blackjack-v0", image_size=96)
    obs, _ = env.reset(seed=4)
    n = len(env.unwrapped.player)
    obs2, *_ = env.step(1)
    assert len(env.unwrapped.player) == n + 1
    assert not np.array_equal(obs["image"], obs2["image"])


# -- minigrid ----------------------------------------------------------------------------------
def test_minigrid_oracle_takes_a_shortest_path() -> None:
    env = make("mmrl/MiniGridNav-v0", env_id="MiniGrid-Empty-5x5-v0")
    env.reset(seed=0)
    actions, terminated, reward = [], False, 0.0
    while not terminated:
        actions.append(env.unwrapped.oracle_action())
        _, reward, terminated, _, info = env.step(actions[-1])
    # Start (1,1) facing east, goal (3,3): two forward, turn right, two forward.
    assert actions == [2, 2, 1, 2, 2]
    assert info["success"] and info["event"] == "goal" and reward > 0.9


def test_minigrid_size_sets_the_grid() -> None:
    env = make(
        "mmrl/MiniGridNav-v0", env_id="MiniGrid-Empty-5x5-v0", size=8, image_size=None, tile_size=4
    )
    obs, _ = env.reset(seed=0)
    assert obs["image"].shape == (32, 32, 3)
    assert obs["text"] == "get to the green goal square"


# -- datasets ----------------------------------------------------------------------------------
def _tiny_vqa(tmp_path: Path) -> Path:
    import datasets

    colors = ["red", "green", "blue"]
    images = [Image.new("RGB", (20, 20), PALETTE[c]) for c in colors]
    ds = datasets.Dataset.from_dict(
        {
            "image": images,
            "question": ["what color is the image ?"] * 3,
            "answer": [[c, c.upper()] for c in colors],
        },
        features=datasets.Features(
            {
                "image": datasets.Image(),
                "question": datasets.Value("string"),
                "answer": datasets.Sequence(datasets.Value("string")),
            }
        ),
    )
    path = tmp_path / "vqa"
    datasets.DatasetDict({"test": ds}).save_to_disk(str(path))
    return path


def test_dataset_env_shows_row_seed_mod_len_and_scores_by_normalised_match(tmp_path: Path) -> None:
    env = make("mmrl/DatasetVQA-v0", path=str(_tiny_vqa(tmp_path)), image_size=32)
    obs, info = env.reset(seed=4)
    assert info["index"] == 1 and obs["image"].shape == (32, 32, 3)
    assert tuple(obs["image"][16, 16]) == PALETTE["green"]
    assert env.step(" Green. ")[1] == 1.0
    env.reset(seed=0)
    assert env.step("blue")[1] == 0.0


def test_dataset_env_reads_parquet_files(tmp_path: Path) -> None:
    import datasets

    ds = datasets.Dataset.from_dict(
        {"img": [Image.new("RGB", (16, 16), (255, 0, 0))], "q": ["what color ?"], "a": ["red"]},
        features=datasets.Features(
            {"img": datasets.Image(), "q": datasets.Value("string"), "a": datasets.Value("string")}
        ),
    )
    ds.to_parquet(str(tmp_path / "rows.parquet"))
    env = make(
        "mmrl/DatasetVQA-v0",
        path=str(tmp_path / "rows.parquet"),
        image_column="img",
        question_column="q",
        answer_column="a",
    )
    obs, _ = env.reset(seed=0)
    assert obs["text"] == "what color ?" and env.step("red")[1] == 1.0


def test_dataset_env_names_missing_columns(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"no column\(s\) \['caption'\]"):
        make("mmrl/DatasetVQA-v0", path=str(_tiny_vqa(tmp_path)), question_column="caption")


@pytest.mark.parametrize("task", ["numberline", "color_shape"])
def test_rollout_records_and_frames_do_not_depend_on_the_frame_memo(task: str) -> None:
    """Through the engine: the same records and the same frames seen by the policy with every
    frame drawn afresh as with the memo."""
    from mmrl_harness.rollout import PolicyOutput, run_episodes
    from mmrl_harness.tasks import make_task_env

    class Alternating:
        """Answers left, right, left, ... (and one colour word): a fixed, scripted policy."""

        def __init__(self) -> None:
            self.frames: list[bytes] = []
            self.turn = 0

        def act(self, observations: list, action_words: tuple[str, ...]) -> list[PolicyOutput]:
            self.frames += [o.image.tobytes() for o in observations]
            self.turn += 1
            return [PolicyOutput(action_words[self.turn % 2], 1) for _ in observations]

    def rollout() -> tuple[list[bytes], list[tuple[object, ...]]]:
        policy = Alternating()
        records = run_episodes(lambda: make_task_env(task), policy, list(range(12)), batch_size=4)
        # Everything but the timing.
        keep = [(r.seed, r.actions, r.rewards, r.success, r.length, r.truncated) for r in records]
        return policy.frames, keep

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(env_base, "FRAME_CACHE_SIZE", 0)  # nothing kept: every frame drawn
        env_base._FRAMES.clear()
        drawn = rollout()
    memoised = rollout()  # the same episodes, frames from the memo where the env memoises
    assert memoised == drawn
    assert memoised == rollout()
    if task == "numberline":
        assert len(env_base._FRAMES) > 1  # the memo was used
