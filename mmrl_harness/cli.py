"""The ``mmrl`` command line: thin wrappers over library functions (no logic lives here).

Heavy modules (torch, transformers) are imported inside commands, so listing commands start fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from mmrl_harness import __version__
from mmrl_harness.cli_support import fail as _fail
from mmrl_harness.cli_support import user_errors as _user_errors
from mmrl_harness.plugin_tools.cli import plugins_app

if TYPE_CHECKING:
    from rich.progress import Progress

    from mmrl_harness.results import EvalResults

app = typer.Typer(
    name="mmrl",
    help="Fine-tune vision-language models with RL and compare image-text fusion strategies.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()


#: Help of every --allow-env-imports option: say plainly that it runs code.
_ALLOW_ENV_IMPORTS_HELP = (
    "RUNS CODE: let a task's env 'module:Id' import that module (never from the working "
    "directory). Off: only env ids already registered with Gymnasium are accepted."
)


@app.command()
def version() -> None:
    """Print the harness version and the plugin API version."""
    from mmrl_harness.registry import PLUGIN_API_VERSION

    console.print(f"mmrl-harness {__version__} (plugin API {PLUGIN_API_VERSION})")


# `mmrl plugins` (list), `mmrl plugins doctor`, `mmrl plugins new`: mmrl_harness/plugin_tools.
app.add_typer(plugins_app, name="plugins")


tasks_app = typer.Typer(
    help="List tasks (built-in suite and plugins) or show one resolved definition.",
    invoke_without_command=True,
    no_args_is_help=False,
)
app.add_typer(tasks_app, name="tasks")


@tasks_app.callback()
def tasks_list(
    ctx: typer.Context,
    check: Annotated[
        bool, typer.Option("--check", help="Validate every definition (slower) and show errors.")
    ] = False,
) -> None:
    """List tasks: name, kind, environment and description (reads YAML only; no torch)."""
    if ctx.invoked_subcommand is not None:
        return
    # The table is shared with the console script's fast path (mmrl_harness.entry).
    from mmrl_harness.listing import print_tasks

    print_tasks(console, check=check)


@tasks_app.command("show")
def tasks_show(
    name: Annotated[str, typer.Argument(help="Task name or path to a task YAML.")],
    allow_env_imports: Annotated[bool, typer.Option(help=_ALLOW_ENV_IMPORTS_HELP)] = False,
) -> None:
    """Print the resolved definition of a task (includes merged, defaults filled)."""
    from mmrl_harness.tasks import UnknownTaskError, get_task, to_yaml

    try:
        with _user_errors():
            task = get_task(name, allow_env_imports=allow_env_imports)
            typer.echo(to_yaml(task), nl=False)
    except UnknownTaskError as err:
        _fail(str(err))


_PerturbOption = Annotated[
    list[str] | None,
    typer.Option(help="Also run under NAME[:LEVEL], e.g. blur:1.5, paraphrase; repeatable."),
]
_PriceOption = Annotated[float | None, typer.Option(help="Machine price per hour: cost.money.")]


def _eval_progress() -> Progress:
    """The progress display of ``mmrl eval``: one bar per task (and per perturbation)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    return Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )


@app.command("eval")
def eval_command(
    task: Annotated[list[str], typer.Option(help="Task name or YAML path; repeat for several.")],
    model: Annotated[
        str | None, typer.Option(help="Hub id, folder, tiny-llava... (default: the manifest's).")
    ] = None,
    fusion: Annotated[
        str | None, typer.Option(help="Fusion adapter (default: the manifest's, else concat).")
    ] = None,
    fusion_option: Annotated[
        list[str] | None, typer.Option(help="Adapter option KEY=VALUE (YAML value); repeatable.")
    ] = None,
    checkpoint: Annotated[
        str | None, typer.Option(help="Fine-tuned checkpoint; its manifest restores the run.")
    ] = None,
    episodes: Annotated[
        int | None, typer.Option(help="Episodes per task (default: the task's eval seeds).")
    ] = None,
    seeds: Annotated[
        str | None, typer.Option(help="Comma-separated env seeds (overrides the task's).")
    ] = None,
    policy_mode: Annotated[
        str, typer.Option(help="generate (free text, parsed) or action_logits (score actions).")
    ] = "generate",
    sample: Annotated[
        bool, typer.Option("--sample/--greedy", help="Sample or act greedily.")
    ] = False,
    batch_size: Annotated[int, typer.Option(help="Environments stepped per batched forward.")] = 16,
    override: Annotated[
        list[str] | None,
        typer.Option(help="Task override KEY=VALUE, e.g. env_kwargs.image_size=32; repeatable."),
    ] = None,
    revision: Annotated[str | None, typer.Option(help="Model revision (Hub branch/sha).")] = None,
    dtype: Annotated[str, typer.Option(help="auto, float32, bfloat16 or float16.")] = "auto",
    device: Annotated[
        str | None, typer.Option(help="cpu, cuda, cuda:1 ... (default: auto).")
    ] = None,
    output: Annotated[str, typer.Option("--output", "-o", help="Results file to write.")] = (
        "results/eval.json"
    ),
    allow_env_imports: Annotated[bool, typer.Option(help=_ALLOW_ENV_IMPORTS_HELP)] = False,
    perturb: _PerturbOption = None,
    price_per_hour: _PriceOption = None,
) -> None:
    """Evaluate a model + fusion adapter on tasks and write a versioned results file."""
    from mmrl_harness.evaluate import run_eval
    from mmrl_harness.preflight import parse_seeds

    with _user_errors():
        parsed_seeds = parse_seeds(seeds, "--seeds") if seeds else None
        with _eval_progress() as progress:
            results = run_eval(
                model,
                task,
                fusion=fusion,
                fusion_options=parse_assignments(fusion_option, "--fusion-option"),
                checkpoint=checkpoint,
                revision=revision,
                dtype=dtype,
                device=device,
                episodes=episodes,
                seeds=parsed_seeds,
                policy_mode=policy_mode,  # type: ignore[arg-type]
                do_sample=sample,
                batch_size=batch_size,
                task_overrides=parse_assignments(override),
                output=output,
                allow_env_imports=allow_env_imports,
                progress=progress,
                perturb=perturb or [],
                price_per_hour=price_per_hour,
            )
    used = results.provenance
    console.print(_results_table(f"{used.model.name_or_path} + {used.fusion.name}", results))
    console.print(f"results written to {output} ({results.cost.wall_time_s:.1f} s)")


def _results_table(title: str, results: EvalResults) -> Table:
    """One row per task: episodes, success, return with its 95% CI, length, invalid actions."""
    table = Table(title=title, title_justify="left")
    for column in ("task", "episodes", "success", "return (95% CI)", "length", "invalid"):
        table.add_column(column)
    for name, result in results.tasks.items():
        m = result.metrics
        ret = m["episode_return"]
        table.add_row(
            name,
            str(result.num_episodes),
            f"{m['success_rate'].value:.3f}",
            f"{ret.value:.3f} [{ret.ci_low:.3f}, {ret.ci_high:.3f}]",
            f"{m['episode_length'].value:.2f}",
            f"{m['invalid_action_rate'].value:.3f}",
        )
    return table


@app.command("verify")
def verify_command(
    paths: Annotated[
        list[str], typer.Argument(metavar="RESULTS.json", help="Results files to check.")
    ],
) -> None:
    """Check results files: schema, counts, every metric recomputed from the records, hashes.

    Prints `ok  PATH` or `PATH: field: problem` per problem; exits 1 unless all verify.
    """
    from mmrl_harness.verify import verify_file

    failed = 0
    for path in paths:
        problems = verify_file(path)
        # Plain echo, not rich: field paths like records[3] must not be read as markup.
        typer.echo(f"ok  {path}" if not problems else "\n".join(f"{path}: {p}" for p in problems))
        failed += bool(problems)
    if failed:
        raise typer.Exit(1)


@app.command("report")
def report_command(
    inputs: Annotated[
        list[str],
        typer.Argument(metavar="RESULTS_OR_SWEEP", help="Results files or folders (searched)."),
    ],
    out: Annotated[str, typer.Option(help="Folder for report.md/.html and plots/.")] = "report",
    format: Annotated[str, typer.Option(help="Comma-separated: md, html (or none).")] = "md,html",
    plots: Annotated[str, typer.Option(help="Comma-separated: png, svg (or none).")] = "png,svg",
) -> None:
    """Rank fusion adapters per task by IQM across runs, with stability and cost columns."""
    from mmrl_harness.experiments import render, report

    with _user_errors():
        formats = report.parse_formats(format, report.REPORT_FORMATS, "--format")
        plot_formats = report.parse_formats(plots, ("png", "svg"), "--plots")
        built = report.build_report(inputs)
        written = report.write_report(built, out, formats=formats, plot_formats=plot_formats)
    for table in render.rich_tables(built.tasks):
        console.print(table)
    console.print(
        f"{len(built.collection.runs)} results file(s); wrote {len(written)} file(s) to {out}"
    )


def parse_assignments(items: list[str] | None, option: str = "--override") -> dict[str, object]:
    """``["a.b=3", "c=red"]`` -> ``{"a.b": 3, "c": "red"}`` (values parsed as YAML, safely)."""
    from mmrl_harness import config_io

    return config_io.parse_assignments(items, option)


@app.command("train")
def train_command(
    config: Annotated[str, typer.Argument(help="Training config YAML (see examples/).")],
    override: Annotated[
        list[str] | None,
        typer.Option(
            help="Config field KEY=VALUE (YAML value), e.g. max_steps=50, lora.r=4, "
            "task_overrides.env_kwargs.image_size=32; repeatable."
        ),
    ] = None,
    resume: Annotated[
        bool | None,
        typer.Option(
            "--resume/--no-resume",
            help="Continue from the last complete checkpoint in output_dir (default: the "
            "config's `resume`).",
        ),
    ] = None,
    allow_env_imports: Annotated[bool, typer.Option(help=_ALLOW_ENV_IMPORTS_HELP)] = False,
    allow_config_change: Annotated[
        bool,
        typer.Option(
            "--allow-config-change",
            help="On resume, accept changes to safe fields (max_steps, save/log/eval cadence) "
            "from the checkpoint's config; other changes are always refused.",
        ),
    ] = False,
) -> None:
    """Fine-tune a VLM + fusion adapter with RL (GRPO, PPO, episodic GRPO) and evaluate it.

    Also runs as `accelerate launch -m mmrl_harness train CONFIG.yaml`; only the main process
    prints and writes results.
    """
    from mmrl_harness.train import TrainingError, is_main_process, load_train_config, train

    main_process = is_main_process()
    with _user_errors():
        overrides = parse_assignments(override)
        if resume is not None:
            overrides["resume"] = resume
        if allow_env_imports:
            overrides["allow_env_imports"] = True
        if allow_config_change:
            overrides["allow_config_change"] = True
        run_config = load_train_config(config, overrides)
        try:
            result = train(run_config, console=console if main_process else None)
        except TrainingError as err:
            _fail(str(err))
    if main_process:
        console.print(
            f"trained {result.algorithm} for {result.global_step} steps "
            f"({result.train_seconds:.1f} s); checkpoints in {result.output_dir}"
        )
        if result.results_path is not None:
            console.print(f"results written to {result.results_path}")


@app.command("sweep")
def sweep_command(
    sweep_file: Annotated[str, typer.Argument(help="Sweep YAML (see docs/sweeps.md).")],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List the cells and what is done; run nothing.")
    ] = False,
    executor: Annotated[str, typer.Option(help="local or ray.")] = "local",
    jobs: Annotated[int, typer.Option(help="local: cells at once (worker processes).")] = 1,
    ray_address: Annotated[
        str | None, typer.Option(help="ray: cluster address (default: a local Ray instance).")
    ] = None,
    output: Annotated[
        str | None, typer.Option("--output", "-o", help="Sweep folder (default: the file's).")
    ] = None,
) -> None:
    """Train and evaluate every cell of a grid of models x adapters x tasks x algorithms x
    seeds; resumable; exits 1 if any cell failed."""
    from mmrl_harness.experiments import sweep

    with _user_errors():
        if dry_run:
            console.print(sweep.plan_table(sweep.plan_sweep(sweep_file, output)))
            return
        plan = sweep.run_sweep(
            sweep_file,
            output_dir=output,
            executor=executor,
            jobs=jobs,
            ray_address=ray_address,
            console=console,
        )
    console.print(sweep.outcome_table(plan))
    if any(r["status"] != "done" for r in plan.records.values()):
        raise typer.Exit(1)


@app.command()
def quickstart(
    family: Annotated[str, typer.Option(help="Tiny model family: llava or qwen2_vl.")] = "llava",
) -> None:
    """Train a tiny VLM with GRPO + LoRA offline and show success before and after (~1 min)."""
    from mmrl_harness.quickstart import run_quickstart

    with _user_errors():
        run_quickstart(family=family, console=console)


# Leaderboards (mmrl submit, mmrl leaderboard ..., mmrl export-hub): mmrl_harness/leaderboard.
from mmrl_harness.leaderboard.cli import register as _register_leaderboard  # noqa: E402

_register_leaderboard(app)


def main() -> None:
    """Entry point of the ``mmrl`` console script and ``python -m mmrl_harness``."""
    app()


if __name__ == "__main__":
    main()
