"""Task definitions, the YAML loader, the suite listing, and episodes driven by text."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

from mmrl_harness import registry
from mmrl_harness.tasks import (
    GymTaskEnv,
    TaskDefinition,
    TaskDefinitionError,
    TaskFolder,
    UnknownTaskError,
    get_task,
    list_tasks,
    load_task_file,
    make_task_env,
    task_factory,
    task_from_dict,
    to_yaml,
    validate_plugin,
    with_overrides,
)

BUILTIN = [
    "blackjack",
    "color_shape",
    "counting",
    "frozenlake",
    "minigrid_empty",
    "numberline",
    "numberline_long",
    "vqa_dataset",
]
# FrozenLake 4x4 has no scripted policy in Gymnasium; this is its shortest safe path.
FROZENLAKE_PATH = ["right", "right", "down", "down", "down", "right"]


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def run_episode(env: GymTaskEnv, seed: int, policy: Any) -> tuple[float, int, bool]:
    """(return, length, success) of one episode; ``policy(env, obs) -> text``."""
    obs = env.reset(seed)
    while True:
        result = env.step(policy(env, obs))
        obs = result.observation
        if result.done:
            return env.episode_return, env.steps, result.info.success


def scripted(env: GymTaskEnv, obs: Any) -> str:
    if env.task.env == "FrozenLake-v1":
        return FROZENLAKE_PATH[env.steps]
    word = env.oracle()
    assert word is not None
    return word


# -- the built-in suite --------------------------------------------------------------------------
def test_builtin_suite_lists_every_task_and_each_validates() -> None:
    summaries = list_tasks(check=True)
    assert [s.name for s in summaries] == BUILTIN
    assert all(s.error is None and s.plugin == "builtin" for s in summaries)
    assert {s.name: s.kind for s in summaries}["numberline"] == "multi_turn"


def test_listing_imports_no_torch_pydantic_gymnasium_or_pil() -> None:
    code = (
        "import sys; from mmrl_harness.tasks import list_tasks; list_tasks(); "
        "print([m for m in ('torch', 'pydantic', 'gymnasium', 'PIL', 'numpy') "
        "if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_unknown_task_suggests_close_names() -> None:
    with pytest.raises(UnknownTaskError, match=r"Did you mean 'numberline'"):
        get_task("numberlin")


def test_get_task_accepts_a_yaml_path(tmp_path: Path) -> None:
    path = write(tmp_path, "mine.yaml", "kind: single_turn\nenv: mmrl/ColorShape-v0\n")
    assert get_task(str(path)).name == "mine"


# -- loading and errors ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "field", "expected"),
    [
        ("invalid_action: {policy: retry}", "invalid_action.policy", "repeat_last"),
        ("max_step: 5", "max_step", "one of: name, description"),
        ("max_steps: ten", "max_steps", "turns per episode"),
        ("parser: {kind: regex}", "parser.pattern", "a Python regular expression"),
        ("eval_seeds: {start: 0, count: 0}", "eval_seeds.count", "number of consecutive seeds"),
        ("actions: {left: [a, b]}", "actions", "action word -> env action"),
        ("prompt: 'go {'", "prompt", "str.format template"),
    ],
)
def test_malformed_yaml_names_file_field_and_expected_form(
    tmp_path: Path, body: str, field: str, expected: str
) -> None:
    steps = "" if body.startswith("max_steps:") else "max_steps: 5\n"  # duplicate keys are refused
    path = write(
        tmp_path, "bad.yaml", f"kind: multi_turn\nenv: mmrl/NumberLine-v0\n{steps}{body}\n"
    )
    with pytest.raises(TaskDefinitionError) as caught:
        load_task_file(path)
    message = str(caught.value)
    assert str(path) in message and field in caught.value.fields and expected in message


def test_consistency_errors_name_their_field(tmp_path: Path) -> None:
    cases = {
        "kind: multi_turn\nenv: mmrl/NumberLine-v0\n": "max_steps",
        "kind: single_turn\nenv: X-v0\nmax_steps: 3\n": "max_steps",
        "kind: single_turn\n": "env",
    }
    for body, field in cases.items():
        with pytest.raises(TaskDefinitionError) as caught:
            load_task_file(write(tmp_path, "t.yaml", body))
        assert caught.value.fields == [field]


def test_yaml_syntax_error_gives_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "broken.yaml", "kind: single_turn\nenv: [unclosed\n")
    with pytest.raises(TaskDefinitionError, match=r"(?s)broken.yaml.*line 3"):
        load_task_file(path)


def test_include_merges_mappings_and_never_inherits_the_name(tmp_path: Path) -> None:
    write(
        tmp_path,
        "_base.yaml",
        """\
        name: base
        kind: multi_turn
        env: mmrl/NumberLine-v0
        env_kwargs: {line_length: 5, image_size: 32}
        max_steps: 8
    """,
    )
    child = load_task_file(
        write(tmp_path, "child.yaml", "include: _base.yaml\nenv_kwargs: {line_length: 9}\n")
    )
    assert child.name == "child"
    assert child.env_kwargs == {"line_length": 9, "image_size": 32} and child.max_steps == 8
    assert [p.name for p in TaskFolder(tmp_path).files()] == ["child.yaml"]  # _* are bases


def test_include_of_a_missing_file_is_an_include_error(tmp_path: Path) -> None:
    with pytest.raises(TaskDefinitionError) as caught:
        load_task_file(write(tmp_path, "t.yaml", "include: nope.yaml\n"))
    assert caught.value.fields == ["include"]


def test_overrides_revalidate_and_name_the_field() -> None:
    task = with_overrides(get_task("numberline"), {"env_kwargs.line_length": 9, "max_steps": 30})
    assert task.env_kwargs["line_length"] == 9 and task.max_steps == 30
    with pytest.raises(TaskDefinitionError) as caught:
        with_overrides(task, {"invalid_action.policy": "retry"})
    assert caught.value.fields == ["invalid_action.policy"]


def test_resolved_yaml_loads_back_to_the_same_definition(tmp_path: Path) -> None:
    for name in BUILTIN:
        task = get_task(name)
        again = load_task_file(write(tmp_path, f"{name}.yaml", to_yaml(task)))
        assert again.model_dump() == task.model_dump()


def test_eval_seeds_accept_a_range_or_a_list() -> None:
    base = {"kind": "single_turn", "env": "mmrl/ColorShape-v0", "name": "t"}
    assert task_from_dict({**base, "eval_seeds": {"start": 5, "count": 3}}).eval_seeds.seeds() == [
        5,
        6,
        7,
    ]
    assert task_from_dict({**base, "eval_seeds": [9, 2]}).eval_seeds.seeds() == [9, 2]


# -- episodes on every built-in task ---------------------------------------------------------
PLAYABLE = [n for n in BUILTIN if n != "vqa_dataset"]


@pytest.mark.parametrize("name", PLAYABLE)
def test_reset_and_step_give_image_and_prompt(name: str) -> None:
    env = make_task_env(name)
    obs = env.reset(seed=0)
    assert obs.image.dtype == np.uint8 and obs.image.shape == (64, 64, 3) and obs.step == 0
    assert obs.text.endswith("?") or obs.text.endswith(".")
    result = env.step(env.action_words[0])
    assert result.info.action_is_valid and result.info.action == env.action_words[0]
    assert result.observation.step == 1 and isinstance(result.reward, float)


@pytest.mark.parametrize("name", PLAYABLE)
def test_same_seed_gives_identical_images_and_text(name: str) -> None:
    def frames(seed: int) -> list[tuple[bytes, str]]:
        env = make_task_env(name)
        out = [(env.reset(seed).image.tobytes(), "")]
        for word in (env.action_words * 3)[:4]:
            result = env.step(word)
            out.append((result.observation.image.tobytes(), result.observation.text))
            if result.done:
                break
        return out

    assert frames(11) == frames(11)


@pytest.mark.parametrize(
    ("name", "expected_return"),
    [
        ("color_shape", 1.0),
        ("counting", 1.0),
        ("numberline", 1.0),
        ("numberline_long", 1.0),
        ("minigrid_empty", 1.0),
        ("frozenlake", 1.0),
    ],
)
def test_scripted_optimal_policy_earns_the_optimal_return(
    name: str, expected_return: float
) -> None:
    env = make_task_env(name)
    for seed in range(10):
        episode_return, length, success = run_episode(env, seed, scripted)
        assert (episode_return, success) == (expected_return, True)
        if name.startswith("numberline"):  # minimum length: the start-target distance
            env.reset(seed)
            line = env.env.unwrapped
            assert length == abs(line.target - line.position)
        if name == "minigrid_empty":
            assert length == 5
        if name == "frozenlake":
            assert length == 6


def test_blackjack_task_scores_hands_like_gymnasium() -> None:
    env, reference = make_task_env("blackjack"), gym.make("Blackjack-v1")
    for seed in range(30):
        env.reset(seed)
        reference.reset(seed=seed)
        total, done = 0.0, False
        while not done:
            word = scripted(env, None)
            result = env.step(word)
            _, reward, done, _, _ = reference.step(env.action_words.index(word))
            total += float(reward)
            assert result.done == done
        assert env.episode_return == total and result.info.success == (total > 0)


@pytest.mark.parametrize(
    ("name", "low", "high"),
    [
        ("color_shape", 0.0, 1.0),
        ("counting", 0.0, 1.0),
        ("numberline", -10.0, 1.0),
        ("numberline_long", -20.0, 1.0),
        ("blackjack", -1.0, 1.0),
        ("minigrid_empty", 0.0, 1.0),
        ("frozenlake", 0.0, 1.0),
    ],
)
def test_random_policy_return_stays_in_bounds(name: str, low: float, high: float) -> None:
    env = make_task_env(name)
    rng = np.random.default_rng(0)
    returns = [
        run_episode(env, s, lambda e, o: str(rng.choice(e.action_words)))[0] for s in range(40)
    ]
    assert all(low <= r <= high for r in returns)
    if name in ("color_shape", "numberline_long"):  # far below the scripted policy's 1.0
        assert np.mean(returns) < 0.5


# -- invalid actions, parsing, rewards -------------------------------------------------------
def numberline(**overrides: Any) -> GymTaskEnv:
    return make_task_env(with_overrides(get_task("numberline"), overrides))


def test_penalize_keeps_the_env_still_and_counts_the_turn() -> None:
    env = numberline()
    obs = env.reset(seed=0)
    result = env.step("jump")
    assert (result.reward, result.info.action_is_valid, result.info.event) == (
        -1.0,
        False,
        "invalid_action",
    )
    assert np.array_equal(result.observation.image, obs.image) and env.steps == 1
    assert env.invalid_actions == 1 and not result.done


def test_repeat_last_repeats_the_last_valid_action() -> None:
    env = numberline(**{"invalid_action.policy": "repeat_last", "invalid_action.penalty": -0.5})
    env.reset(seed=0)
    env.env.unwrapped.position, env.env.unwrapped.target = 0, 4
    env.step("right")
    result = env.step("???")
    assert env.env.unwrapped.position == 2 and result.info.env_action == 1
    assert result.reward == -0.5 and result.info.action is None


def test_repeat_last_without_history_uses_the_fallback_or_stays() -> None:
    env = numberline(**{"invalid_action.policy": "repeat_last"})
    env.reset(seed=0)
    env.env.unwrapped.position, env.env.unwrapped.target = 2, 4
    assert env.step("").info.env_action is None and env.env.unwrapped.position == 2
    env = numberline(
        **{"invalid_action.policy": "repeat_last", "invalid_action.fallback_action": "left"}
    )
    env.reset(seed=0)
    env.env.unwrapped.position, env.env.unwrapped.target = 2, 4
    env.step("")
    assert env.env.unwrapped.position == 1


def test_end_episode_terminates_unsuccessfully() -> None:
    env = numberline(**{"invalid_action.policy": "end_episode", "invalid_action.penalty": -2.0})
    env.reset(seed=0)
    result = env.step("maybe")
    assert (result.terminated, result.reward, result.info.success) == (True, -2.0, False)
    with pytest.raises(RuntimeError, match="reset"):
        env.step("left")


def test_single_turn_invalid_answer_ends_the_episode_with_the_penalty() -> None:
    env = make_task_env(with_overrides(get_task("color_shape"), {"invalid_action.penalty": -1}))
    env.reset(seed=0)
    result = env.step("banana")
    assert (result.terminated, result.reward, env.invalid_actions) == (True, -1.0, 1)


def test_max_steps_truncates() -> None:
    env = numberline(max_steps=3)
    env.reset(seed=0)
    env.env.unwrapped.position, env.env.unwrapped.target = 0, 4
    results = [env.step("left") for _ in range(3)]
    assert [r.truncated for r in results] == [False, False, True]
    assert not results[-1].terminated and env.episode_return == -3.0


@pytest.mark.parametrize(
    ("kind", "pattern", "text", "word"),
    [
        ("first_word", None, "Right. I move right", "right"),
        ("first_word", None, "I go right", None),
        ("first_action", None, "I will go right now", "right"),
        ("exact", None, "  LEFT! ", "left"),
        ("exact", None, "left please", None),
        ("regex", r"action:\s*(\w+)", "thinking... action: left", "left"),
    ],
)
def test_parsers(kind: str, pattern: str | None, text: str, word: str | None) -> None:
    env = numberline(parser={"kind": kind, "pattern": pattern})
    env.reset(seed=0)
    assert env.step(text).info.action == word


def test_reward_mapping_scales_and_replaces_events() -> None:
    env = numberline(reward={"scale": 2.0, "offset": 0.5, "events": {"goal": 10.0}})
    env.reset(seed=0)
    env.env.unwrapped.position, env.env.unwrapped.target = 1, 2
    assert env.step("left").reward == 2.0 * -1.0 + 0.5
    assert env.step("right").reward == 0.5
    assert env.step("right").reward == 10.0


# -- generic Gymnasium envs and datasets through YAML alone ------------------------------------
def test_plain_gymnasium_env_becomes_a_task_with_yaml_alone(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "cartpole.yaml",
        """\
        kind: multi_turn
        env: CartPole-v1
        frame: render
        image_size: 48
        prompt: "step {step} of {max_steps} . what is your action ?"
        actions: {left: 0, right: 1}
        success: {min_return: 30}
        max_steps: 30
    """,
    )
    env = make_task_env(get_task(str(path)))
    obs = env.reset(seed=0)
    assert obs.image.shape == (48, 48, 3) and obs.text == "step 0 of 30 . what is your action ?"
    rng = np.random.default_rng(0)
    records = [
        run_episode(env, s, lambda e, o: str(rng.choice(["left", "right"]))) for s in range(5)
    ]
    assert all(1 <= length <= 30 and ret == length for ret, length, _ in records)
    assert all(success == (length == 30) for _, length, success in records)


def test_env_errors_name_the_task_file_and_field(tmp_path: Path) -> None:
    cases = {
        "env: NoSuchEnv-v0\n": "env",
        "env: CartPole-v1\nenv_kwargs: {wings: 2}\n": "env_kwargs",
        "env: CartPole-v1\nactions: {left: 7}\n": "actions.left",
        "env: CartPole-v1\nactions: {left: 0, right: 1}\nprompt: '{colour}'\n": "prompt",
    }
    for body, field in cases.items():
        path = write(tmp_path, "t.yaml", f"kind: multi_turn\nmax_steps: 3\n{body}")
        with pytest.raises(TaskDefinitionError) as caught:
            make_task_env(load_task_file(path)).reset(seed=0)
        assert caught.value.fields == [field] and str(path) in str(caught.value)


def test_dataset_task_from_a_local_dataset(tmp_path: Path) -> None:
    import datasets
    from PIL import Image

    rows = {
        "image": [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 0, 255))],
        "question": ["what color is the image ?"] * 2,
        "answer": ["red", "blue"],
    }
    datasets.Dataset.from_dict(rows).save_to_disk(str(tmp_path / "data" / "my_vqa"))
    builtin = get_task("vqa_dataset")
    task = load_task_file(write(tmp_path, "vqa.yaml", to_yaml(builtin)))  # path relative to YAML
    env = make_task_env(task)
    assert env.action_words == ()
    obs = env.reset(seed=1)
    assert obs.text == "what color is the image ? answer with one word ." and obs.image.shape == (
        64,
        64,
        3,
    )
    assert env.step("Blue.").reward == 1.0
    env.reset(seed=0)
    result = env.step("blue")
    assert (result.reward, result.info.success, result.done) == (0.0, False, True)


# -- plugins -----------------------------------------------------------------------------------
@pytest.fixture
def local_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry.tasks, "_local", {})


def test_plugins_add_folders_definitions_and_factories(tmp_path: Path, local_plugins: None) -> None:
    write(tmp_path, "extra.yaml", "kind: single_turn\nenv: mmrl/Counting-v0\n")
    one = task_from_dict({"name": "one", "kind": "single_turn", "env": "mmrl/ColorShape-v0"})
    registry.tasks.register("folder", TaskFolder(tmp_path))
    registry.tasks.register("single", one)
    registry.tasks.register(
        "factory", task_factory(lambda: [one.model_copy(update={"name": "two"})])
    )
    summaries = {s.name: s for s in list_tasks()}
    assert summaries["extra"].plugin == "folder" and summaries["one"].source == "<plugin single>"
    assert get_task("two").env == "mmrl/ColorShape-v0"


def test_a_broken_plugin_or_duplicate_is_listed_with_its_error(local_plugins: None) -> None:
    def broken() -> list[TaskDefinition]:
        raise RuntimeError("no network")

    registry.tasks.register("broken", task_factory(broken))
    registry.tasks.register(
        "dupe",
        task_from_dict({"name": "numberline", "kind": "single_turn", "env": "mmrl/ColorShape-v0"}),
    )
    errors = {(s.name, s.plugin): s.error for s in list_tasks() if s.error}
    assert "no network" in errors[("broken", "broken")]
    assert "duplicates" in errors[("numberline", "dupe")]
    assert get_task("numberline").kind == "multi_turn"  # the first one still works


def test_validate_plugin_rejects_other_objects() -> None:
    info = registry.PluginInfo("x", "tasks", "m:x", "dist", "1.0")
    with pytest.raises(registry.PluginValidationError, match="expected a TaskFolder"):
        validate_plugin(42, info)
    validate_plugin(TaskFolder("."), info)


def test_task_summary_is_plain_data() -> None:
    summary = next(s for s in list_tasks() if s.name == "frozenlake")
    assert json.loads(json.dumps(summary.__dict__))["env"] == "FrozenLake-v1"


def test_docs_describe_every_schema_field() -> None:
    docs = (Path(__file__).parent.parent / "docs" / "tasks.md").read_text()
    missing = [f for f in TaskDefinition.model_fields if f"`{f}`" not in docs]
    assert missing == []


def test_system_prompt_names_the_actions() -> None:
    env = numberline(system_prompt="answer with one of: {actions}")
    assert env.system_prompt == "answer with one of: left right"


def test_numberline_eval_seeds_are_all_solvable_and_every_state_draws_its_own_frame() -> None:
    """The example's plateau (greedy success stuck at 0.91-0.94) is not the task's doing: no
    evaluation seed starts on the target or further than max_steps from it, the oracle solves
    each in |target - start| turns, and at 32 px the 20 (target, marker) states draw 20 distinct
    frames (a policy can tell every state apart from the image alone)."""
    task = with_overrides(get_task("numberline"), {"env_kwargs.image_size": 32})
    env = make_task_env(task)
    line = env.env.unwrapped
    for seed in task.eval_seeds.seeds():
        env.reset(seed)
        distance = abs(line.target - line.position)
        assert 1 <= distance <= task.max_steps, seed
        _, length, success = run_episode(env, seed, scripted)
        assert (length, success) == (distance, True), seed
    frames = set()
    for target in range(line.line_length):
        for position in range(line.line_length):
            if position != target:
                line.target, line.position = target, position
                frames.add(line._observation()["image"].tobytes())
    assert len(frames) == line.line_length * (line.line_length - 1)
