"""Leaderboards: every bad submission is refused with its field and nothing written; good ones
are stored sanitised, ranked by IQM over training seeds, rendered, reproduced and exported."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
import yaml

from mmrl_harness.errors import MMRLError
from mmrl_harness.evaluate import evaluate, resolve_task
from mmrl_harness.leaderboard.board import Board, LeaderboardError
from mmrl_harness.leaderboard.entries import training_seed
from mmrl_harness.leaderboard.ranking import rank_entries
from mmrl_harness.leaderboard.render import render
from mmrl_harness.leaderboard.submit import SubmissionRefused, submit
from mmrl_harness.metrics.across_seeds import iqm
from mmrl_harness.results import EvalResults, document_digest, load_results, records_digest
from mmrl_harness.verify import verify_file

if TYPE_CHECKING:
    from mmrl_harness.models.loading import LoadedVLM

Raw = dict[str, Any]
TASK = "numberline"
OVERRIDES = {"env_kwargs.image_size": 32, "max_steps": 4}
SEEDS = [10000, 10001, 10002, 10003]


def board_yaml(**changes: Any) -> str:
    """A board on the test task; ``changes`` replace top-level fields."""
    spec: dict[str, Any] = {
        "title": "test board",
        "tasks": {
            TASK: {"seeds": {"start": SEEDS[0], "count": len(SEEDS)}, "overrides": OVERRIDES}
        },
        "secondary": ["episode_length", "stability", "eval_wall_time_s", "money"],
        "required_provenance": ["harness_version", "model.fingerprint", "fusion.name"],
        "min_training_seeds": 2,
    }
    spec.update(changes)
    return yaml.safe_dump(spec)


def make_board(root: Path, name: str = "test", **changes: Any) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "board.yaml").write_text(board_yaml(**changes))
    return folder


@pytest.fixture(scope="module")
def runs(tiny_llava: LoadedVLM, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Real results files: three sampled runs (training seeds 0-2) and two greedy ones (0-1).

    The ``seed`` in the config is the training seed a board groups by; sampling draws from
    torch's global generator, seeded per run, so the sampled runs score differently.
    """
    import torch

    folder = tmp_path_factory.mktemp("runs")
    task = resolve_task(TASK, OVERRIDES)
    out = {}
    for sample, seeds in ((True, (0, 1, 2)), (False, (0, 1))):
        for seed in seeds:
            torch.manual_seed(seed)
            name = f"{'sampled' if sample else 'greedy'}{seed}"
            # An absolute output folder in the config, as real runs record (stripped on submit).
            config = {"seed": seed, "output_dir": str(folder / name)}
            evaluate(
                tiny_llava,
                [task],
                seeds=SEEDS,
                batch_size=4,
                do_sample=sample,
                policy_mode="action_logits",
                config=config,
                output=folder / f"{name}.json",
            )
            out[name] = folder / f"{name}.json"
    return out


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (hidden ones included) with its bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def variant(source: Path, folder: Path, edit: Callable[[Raw], None], rehash: bool) -> Path:
    """A copy of ``source`` with ``edit`` applied; ``rehash`` re-stamps both digests honestly."""
    raw = copy.deepcopy(json.loads(source.read_text()))
    edit(raw)
    if rehash:
        results = EvalResults.model_validate(raw)
        raw["records_sha256"] = results.records_sha256 = records_digest(results.tasks)
        raw["document_sha256"] = document_digest(results)
    path = folder / f"variant-{hashlib.sha256(json.dumps(raw).encode()).hexdigest()[:8]}.json"
    path.write_text(json.dumps(raw, indent=2))
    return path


@pytest.fixture
def boards(tmp_path: Path, runs: dict[str, Path]) -> Path:
    """A boards folder with board ``test`` holding one accepted entry (greedy0 + greedy1)."""
    root = tmp_path / "boards"
    make_board(root)
    submit([runs["greedy0"], runs["greedy1"]], "test", root)
    return root


def set_metric(raw: Raw) -> None:
    raw["tasks"][TASK]["metrics"]["success_rate"]["value"] = 1.0


def flip_reward(raw: Raw) -> None:
    record = raw["tasks"][TASK]["records"][0]
    record["rewards"][0] += 1.0
    record["episode_return"] = float(sum(record["rewards"]))


def cut_records(raw: Raw) -> None:
    raw["tasks"][TASK]["records"] = raw["tasks"][TASK]["records"][:2]


def drop_fingerprint(raw: Raw) -> None:
    raw["provenance"]["model"]["fingerprint"] = None


def set_version(version: str) -> Callable[[Raw], None]:
    def edit(raw: Raw) -> None:
        raw["schema_version"] = version

    return edit


# (edit, rehash, expected field) — each refused; rehash=True is an editor who knows the format.
BAD_EDITS = {
    "wrong schema version (future)": (set_version("2.0"), False, "schema_version"),
    "schema version the board refuses": (set_version("1.0"), True, "schema_version"),
    "tampered metric": (set_metric, False, f"tasks.{TASK}.metrics.success_rate.value"),
    "tampered metric, rehashed": (set_metric, True, f"tasks.{TASK}.metrics.success_rate.value"),
    "tampered episode record": (flip_reward, False, "records_sha256"),
    "records removed, rehashed": (cut_records, True, f"tasks.{TASK}.num_episodes"),
    "missing provenance": (drop_fingerprint, True, "provenance.model.fingerprint"),
}


@pytest.mark.parametrize("case", list(BAD_EDITS))
def test_an_edited_file_is_refused_naming_the_field_and_nothing_is_written(
    case: str, boards: Path, runs: dict[str, Path], tmp_path: Path
) -> None:
    edit, rehash, field = BAD_EDITS[case]
    bad = variant(runs["sampled0"], tmp_path, edit, rehash)
    before = snapshot(boards)
    with pytest.raises(SubmissionRefused) as refused:
        submit([bad, runs["sampled1"]], "test", boards)
    assert field in refused.value.fields, str(refused.value)
    assert "nothing was written" in str(refused.value)
    assert snapshot(boards) == before


def refused_field(boards: Path, paths: list[Path], board: str = "test") -> list[str]:
    """Submit, expect a refusal that writes nothing, return the offending fields."""
    before = snapshot(boards)
    with pytest.raises(SubmissionRefused) as refused:
        submit(paths, board, boards)
    assert snapshot(boards) == before
    assert isinstance(refused.value, MMRLError)
    return refused.value.fields


def test_malformed_json_is_refused(boards: Path, runs: dict[str, Path], tmp_path: Path) -> None:
    cut = tmp_path / "truncated.json"
    cut.write_text(runs["sampled0"].read_text()[:500])
    assert refused_field(boards, [cut, runs["sampled1"]]) == ["(file)"]


def test_a_duplicate_is_refused(boards: Path, runs: dict[str, Path]) -> None:
    fields = refused_field(boards, [runs["greedy0"], runs["sampled1"]])
    assert fields == ["provenance.model.fingerprint + provenance.fusion + config"]
    # The same file twice in one call is a duplicate too.
    assert refused_field(boards, [runs["sampled0"], runs["sampled0"]]) == fields


def as_checkpoint_eval(training_seed_: int) -> Callable[[Raw], None]:
    """What ``mmrl eval --checkpoint`` writes (schema 1.2): an evaluation config with no seed
    (the same for every training seed) and the training seed in ``training``."""

    def edit(raw: Raw) -> None:
        raw["schema_version"] = "1.2"
        raw["config"].pop("seed")
        raw["config"].pop("output_dir")
        raw["training"] = {
            "algorithm": "grpo", "seed": training_seed_, "steps": 4, "samples": 32,
            "wall_time_s": 1.0, "trainable_params": 10,
        }  # fmt: skip

    return edit


def test_runs_of_one_checkpoint_recipe_differ_by_their_training_seed(
    tmp_path: Path, runs: dict[str, Path]
) -> None:
    """Three checkpoints of one recipe share their evaluation config: the training seed in
    ``training`` keeps them apart (one entry of three runs), and the same seed twice is still a
    duplicate."""
    root = tmp_path / "boards"
    make_board(root)
    files = [variant(runs["greedy0"], tmp_path, as_checkpoint_eval(s), True) for s in (0, 1, 2)]
    submit(files, "test", root)
    (row,) = rank_entries(Board("test", root))
    assert sorted(run.seed for run in row.entry.runs) == [0, 1, 2]
    again = variant(runs["greedy1"], tmp_path, as_checkpoint_eval(1), True)
    assert refused_field(root, [again]) == [
        "provenance.model.fingerprint + provenance.fusion + config"
    ]


def test_the_wrong_task_set_is_refused(boards: Path, runs: dict[str, Path]) -> None:
    two_tasks = {TASK: {"seeds": list(SEEDS)}, "color_shape": {"seeds": list(SEEDS)}}
    make_board(boards, "two", tasks=two_tasks)
    assert "tasks" in refused_field(boards, [runs["sampled0"], runs["sampled1"]], "two")


def test_the_wrong_seed_set_is_refused(boards: Path, runs: dict[str, Path]) -> None:
    make_board(boards, "more-seeds", tasks={TASK: {"seeds": [*SEEDS, 10004]}})
    fields = refused_field(boards, [runs["sampled0"], runs["sampled1"]], "more-seeds")
    assert fields == [f"tasks.{TASK}.records[].seed"]


def test_a_pinned_task_variant_is_enforced(boards: Path, runs: dict[str, Path]) -> None:
    make_board(boards, "pinned", tasks={TASK: {"seeds": SEEDS, "task_hash": "0" * 64}})
    fields = refused_field(boards, [runs["sampled0"], runs["sampled1"]], "pinned")
    assert fields == [f"tasks.{TASK}.task_hash"]


def test_too_few_training_seeds_are_refused(boards: Path, runs: dict[str, Path]) -> None:
    assert refused_field(boards, [runs["sampled0"]]) == ["training.seed"]
    make_board(boards, "three", min_training_seeds=3)
    assert refused_field(boards, [runs["sampled0"], runs["sampled1"]], "three") == ["training.seed"]


def test_an_oversized_file_is_refused_before_parsing(boards: Path, tmp_path: Path) -> None:
    make_board(boards, "small", max_file_bytes=1024)
    # Not even JSON: the size check comes first, so the refusal is about size.
    big = tmp_path / "big.json"
    big.write_bytes(b"x" * 1025)
    with pytest.raises(SubmissionRefused, match="1024 bytes"):
        submit([big], "small", boards)


@pytest.mark.parametrize("name", ["../evil", "..", "a/b", "/tmp/x", "Test", ""])
def test_board_names_that_could_leave_the_boards_folder_are_refused(
    name: str, boards: Path, runs: dict[str, Path]
) -> None:
    outside = boards.parent
    before = snapshot(outside)
    with pytest.raises(LeaderboardError, match="plain folder name"):
        submit([runs["sampled0"], runs["sampled1"]], name, boards)
    assert snapshot(outside) == before


def test_a_submissions_link_pointing_outside_the_board_is_refused(
    boards: Path, runs: dict[str, Path], tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    board = make_board(boards, "linked")
    os.symlink(elsewhere, board / "submissions")
    with pytest.raises(LeaderboardError, match="outside the board folder"):
        submit([runs["sampled0"], runs["sampled1"]], "linked", boards)
    assert list(elsewhere.iterdir()) == []


def test_good_runs_are_stored_sanitised_content_addressed_and_still_verify(
    boards: Path, runs: dict[str, Path]
) -> None:
    accepted = submit([runs[f"sampled{s}"] for s in range(3)], "test", boards)
    assert len({a.entry for a in accepted}) == 1 and len(accepted) == 3
    for item in accepted:
        data = item.stored.read_bytes()
        assert item.stored.name == f"{hashlib.sha256(data).hexdigest()}.json"
        assert item.stored.parent == (boards / "test" / "submissions").resolve()
        assert verify_file(item.stored) == []
        text = data.decode()
        # The run's absolute output folder is gone, its last component kept.
        assert str(runs["sampled0"].parent) not in text
        assert "<local>/sampled" in text
        home = os.path.expanduser("~")
        if home not in ("", "/"):
            assert home not in text
        # Stripping changed the document, so the stored copy carries its own, new digest.
        assert item.stored_document_sha256 != item.original_document_sha256
        assert load_results(item.stored).document_sha256 == item.stored_document_sha256
    assert not list((boards / "test" / "submissions").glob(".*"))  # no temp files left


def test_entries_are_ranked_by_iqm_over_training_seeds(boards: Path, runs: dict[str, Path]) -> None:
    submit([runs[f"sampled{s}"] for s in range(3)], "test", boards)
    rows = rank_entries(Board("test", boards))
    assert [len(r.entry.runs) for r in sorted(rows, key=lambda r: len(r.entry.runs))] == [2, 3]
    for row in rows:
        # Independently: each run's success rate, straight from its stored file.
        scores = [
            [json.loads(run.path.read_text())["tasks"][TASK]["metrics"]["success_rate"]["value"]]
            for run in row.entry.runs
        ]
        assert row.score.value == iqm(np.array(scores))  # same function, same numbers
        assert row.score.ci_low is not None and row.score.ci_high is not None
        assert row.score.ci_low <= row.score.value <= row.score.ci_high
        assert sorted(r.seed for r in row.entry.runs) == [
            training_seed(load_results(r.path)) for r in row.entry.runs
        ]
    values = [r.score.value for r in rows]
    assert values == sorted(values, reverse=True) and [r.rank for r in rows] == [1, 2]


def test_render_writes_a_self_contained_page_and_readme(
    boards: Path, runs: dict[str, Path]
) -> None:
    submit([runs[f"sampled{s}"] for s in range(3)], "test", boards)
    readme, page = render("test", boards)
    text = page.read_text()
    assert text.count('<tr class="entry"') == 2
    assert text.count("<svg") == 2 and 'id="plot-pareto"' in text
    # Nothing to fetch: no scripts, stylesheets, images or imports (xmlns URIs are names only).
    for fetching in ("<script", "<link", "src=", "@import", "url(http"):
        assert fetching not in text
    links = re.findall(r'<a href="([^"]+)"', text)
    assert len(links) == 5 and all((page.parent / link).is_file() for link in links)
    table = readme.read_text()
    assert table.count("\n| 1 |") == 1 and table.count("\n| 2 |") == 1


#: Where the page's screenshot is kept (ignored by git); CI can archive the folder.
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


def chromium(*args: str) -> tuple[str, str]:
    """Run headless Chromium; its stdout and stderr (console messages go to stderr)."""
    import subprocess

    binary = next(
        (b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None
    )
    if binary is None:
        pytest.skip("no chromium on PATH: .ci/run installs Debian's `chromium` where apt works")
    done = subprocess.run(
        [
            binary,
            "--headless",
            "--disable-gpu",
            "--no-sandbox",
            "--enable-logging=stderr",
            "--v=0",
            "--window-size=1280,1000",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout, done.stderr


def console_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


def test_the_page_loads_in_headless_chromium(
    boards: Path, runs: dict[str, Path], tmp_path: Path
) -> None:
    submit([runs[f"sampled{s}"] for s in range(3)], "test", boards)
    _, page = render("test", boards)
    # The console check is live: a page that logs an error is caught by the same parsing.
    control = tmp_path / "control.html"
    control.write_text("<!DOCTYPE html><script>console.error('boom')</script>")
    assert any(
        "boom" in line for line in console_lines(chromium("--dump-dom", control.as_uri())[1])
    )
    dom, stderr = chromium("--dump-dom", page.as_uri())
    assert console_lines(stderr) == []
    assert dom.count('<tr class="entry"') == 2 and dom.count("<svg") == 2
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "leaderboard.png"
    shot.unlink(missing_ok=True)
    _, stderr = chromium(f"--screenshot={shot}", page.as_uri())
    assert console_lines(stderr) == []
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_hub_export_writes_eval_results_and_model_index(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    from huggingface_hub import ModelCard

    from mmrl_harness.leaderboard.hub import HubSource, export_hub

    results = load_results(runs["greedy0"])
    paths = export_hub(
        runs["greedy0"],
        tmp_path / "repo",
        model_name="tiny-adapter",
        source=HubSource(url="https://example.org/board", user="someone"),
    )
    (entry,) = yaml.safe_load((tmp_path / "repo" / ".eval_results" / f"{TASK}.yaml").read_text())
    value = results.tasks[TASK].metrics["success_rate"].value
    assert entry == {
        "dataset": {"id": f"mmrl-harness/{TASK}"},
        "task_id": TASK,
        "value": value,
        "date": results.created_at[:10],
        "source": {"url": "https://example.org/board", "name": "mmrl-harness", "user": "someone"},
    }
    card = ModelCard.load(paths[-1])
    (model_index,) = card.data.to_dict()["model-index"]
    assert model_index["name"] == "tiny-adapter"
    (result,) = model_index["results"]
    assert result["task"] == {"type": "reinforcement-learning", "name": TASK}
    assert result["dataset"] == {"type": f"mmrl-harness/{TASK}", "name": TASK}
    assert result["metrics"] == [{"type": "success_rate", "value": value, "name": "success_rate"}]
    assert result["source"] == {"name": "mmrl-harness", "url": "https://example.org/board"}


def test_hub_export_file_names_cannot_leave_the_folder() -> None:
    from mmrl_harness.leaderboard.hub import safe_file_stem

    folder = Path("/srv/repo/.eval_results")
    for name in ("../../etc/passwd", "..", ".hidden", "a/b\\c", "", "ok-name_1.2"):
        stem = safe_file_stem(name)
        assert stem and "/" not in stem and "\\" not in stem and not stem.startswith(".")
        assert (folder / f"{stem}.yaml").resolve().parent == folder
    assert safe_file_stem("ok-name_1.2") == "ok-name_1.2"


def test_reproduce_verifies_an_honest_greedy_entry(boards: Path, runs: dict[str, Path]) -> None:
    from mmrl_harness.leaderboard.reproduce import reproduce

    key = rank_entries(Board("test", boards))[0].entry.key
    outcomes = reproduce("test", key, 2, boards_dir=boards)
    assert [(o.verified, o.episodes, o.mismatches) for o in outcomes] == [(True, 2, [])] * 2


def test_reproduce_catches_records_from_other_weights(
    tmp_path: Path, runs: dict[str, Path]
) -> None:
    """Records from perturbed weights, filed under the fingerprint of the original: the hashes
    are honest, only re-running shows that the model does not do this."""
    import torch

    from mmrl_harness.leaderboard.reproduce import reproduce
    from mmrl_harness.models.loading import load_vlm

    other = load_vlm("tiny-llava")
    with torch.no_grad():  # negated output logits: every greedy choice becomes the worst one
        other.model.get_output_embeddings().weight.neg_()
    task = resolve_task(TASK, OVERRIDES)
    for seed in (0, 1):
        evaluate(
            other,
            [task],
            seeds=SEEDS,
            batch_size=4,
            policy_mode="action_logits",
            config={"seed": seed},
            output=tmp_path / f"other{seed}.json",
        )
    root = tmp_path / "boards"
    make_board(root)
    submit([tmp_path / "other0.json", tmp_path / "other1.json"], "test", root)
    outcomes = reproduce("test", rank_entries(Board("test", root))[0].entry.key, 4, boards_dir=root)
    assert not any(o.verified for o in outcomes)
    assert all(o.mismatches for o in outcomes)


def test_the_cli_submits_shows_and_refuses_with_the_field(
    tmp_path: Path, runs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from mmrl_harness.cli import app
    from mmrl_harness.leaderboard import cli as leaderboard_cli

    monkeypatch.setattr(leaderboard_cli.console, "width", 250)  # no folded cells

    root = tmp_path / "boards"
    make_board(root)
    cli = CliRunner()
    good = [str(runs["greedy0"]), str(runs["greedy1"])]
    done = cli.invoke(app, ["submit", *good, "--board", "test", "--boards-dir", str(root)])
    assert done.exit_code == 0, done.output
    assert done.output.count("accepted ") == 2
    original = load_results(runs["greedy0"]).document_sha256
    assert f"document_sha256 {original} (original) -> " in done.output
    before = snapshot(root)
    again = cli.invoke(app, ["submit", good[0], "--board", "test", "--boards-dir", str(root)])
    assert again.exit_code == 1
    assert "provenance.model.fingerprint + provenance.fusion + config: duplicate of" in (
        again.output
    )
    assert snapshot(root) == before
    shown = cli.invoke(app, ["leaderboard", "show", "test", "--boards-dir", str(root)])
    assert shown.exit_code == 0 and "tiny-llava + concat" in shown.output


def test_the_quickstart_board_is_created_and_takes_its_result(
    tiny_llava: LoadedVLM, tmp_path: Path
) -> None:
    """What `mmrl quickstart` does last (its full run is tested in test_train_grpo.py)."""
    from mmrl_harness.quickstart import quickstart_config, submit_to_local_board

    config = quickstart_config(output_dir=str(tmp_path / "run"))
    config = config.model_copy(update={"eval": config.eval.model_copy(update={"episodes": 4})})
    task = resolve_task(config.task, config.task_overrides)
    results = tmp_path / "results.json"
    evaluate(
        tiny_llava,
        [task],
        episodes=4,
        batch_size=4,
        max_new_tokens=1,
        config={"train": config.model_dump(mode="json")},
        output=results,
    )
    page = submit_to_local_board(results, config, tmp_path / "boards")
    assert page == (tmp_path / "boards" / "quickstart" / "index.html").resolve()
    assert page.read_text().count('<tr class="entry"') == 1
    spec = Board("quickstart", tmp_path / "boards").spec
    assert spec.tasks[task.name].seed_list() == [
        r.seed for r in load_results(results).tasks[task.name].records
    ]


def test_a_board_definition_with_an_unknown_field_or_column_is_refused(tmp_path: Path) -> None:
    from mmrl_harness.leaderboard.board import BoardDefinitionError

    make_board(tmp_path, "typo", min_trainig_seeds=3)
    with pytest.raises(BoardDefinitionError, match="min_trainig_seeds: unknown field"):
        Board("typo", tmp_path)
    make_board(tmp_path, "column", secondary=["episode_length", "vibes"])
    with pytest.raises(BoardDefinitionError, match="vibes"):
        Board("column", tmp_path)


REPO_BOARDS = Path(__file__).resolve().parent.parent / "leaderboards"


@pytest.mark.parametrize("name", sorted(p.name for p in REPO_BOARDS.iterdir() if p.is_dir()))
def test_the_committed_boards_verify_and_rank(name: str) -> None:
    board = Board(name, REPO_BOARDS)
    stored = board.stored_files()
    for path in stored:
        assert verify_file(path) == [], path
        assert path.name == f"{hashlib.sha256(path.read_bytes()).hexdigest()}.json"
    rows = rank_entries(board)
    assert sum(len(r.entry.runs) for r in rows) == len(stored)
    assert all(len(r.entry.runs) >= board.spec.min_training_seeds for r in rows)


def test_strings_from_a_submission_are_escaped_on_the_page(
    tmp_path: Path, runs: dict[str, Path]
) -> None:
    def rename(raw: Raw) -> None:
        raw["provenance"]["fusion"]["name"] = "<script>alert(1)</script>"

    files = [variant(runs[f"sampled{s}"], tmp_path, rename, rehash=True) for s in (0, 1)]
    root = tmp_path / "boards"
    make_board(root)
    submit(files, "test", root)
    _, page = render("test", root)
    text = page.read_text()
    assert "<script" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
