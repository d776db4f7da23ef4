"""The `scaffold` command line: thin Typer commands over the library modules.

Errors: every ``ScaffoldError`` becomes one line on stderr and its exit code here,
in ``run_command``; set ``SCAFFOLD_DEBUG=1`` to see the traceback instead.
"""

import inspect
import os
import shlex
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from scaffold import __version__
from scaffold.errors import InvalidOptionsError, ProjectError, ScaffoldError
from scaffold.features import FEATURES

app = typer.Typer(
    name="scaffold",
    help="Generate explicit PyTorch training projects you own, and keep them current.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


# what str.splitlines() breaks at: a name or path holding one must not turn a
# one-line message into two
_LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"


def one_line(message: str) -> str:
    """``message`` with every line-break character written as its escape."""
    return message.translate({ord(c): repr(c)[1:-1] for c in _LINE_BREAKS})


@contextmanager
def run_command() -> Iterator[None]:
    """Turn a ScaffoldError into a one-line message and its exit code."""
    try:
        yield
    except ScaffoldError as exc:
        if os.environ.get("SCAFFOLD_DEBUG") == "1":
            raise
        typer.echo(f"error: {one_line(str(exc))}", err=True)
        raise typer.Exit(exc.exit_code) from None


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"scaffold {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_version_callback,
            is_eager=True,
            help="Show the version and exit.",
        ),
    ] = False,
) -> None:
    """Generate explicit PyTorch training projects you own, and keep them current."""


def _is_interactive() -> bool:
    """True in a terminal, where `scaffold new` may ask questions."""
    return sys.stdin.isatty() and sys.stdout.isatty()


def _choose_features(path: str) -> set[str]:
    """Ask for the features in a terminal; show the result; confirm before writing.

    The name and the target are checked first, so that no answer is given for
    a project that cannot be made.
    """
    from scaffold.chooser import ask_features, confirm
    from scaffold.project import check_new

    spec = check_new(path)
    typer.echo(f"Features of {spec.name} (Enter keeps the default; Ctrl-C stops):")
    features = ask_features(input, typer.echo)
    spec = spec.with_features(features)
    if not confirm(input, typer.echo, spec.sorted_features(), spec.command_line(path), path):
        typer.echo("Nothing written.")
        raise typer.Exit(1)
    return features


def new_project(path: str, yes: bool, force: bool, **chosen: bool) -> None:
    """Create a training project at PATH (its last part is the project name).

    PATH may be an existing directory, `.` included, such as a repository with
    your own model: the training files are added, and every file already there
    is kept as it is and recorded as yours.
    """
    from scaffold.project import create_project  # lazy: keeps --help fast

    del force  # accepted for old scripts: existing files are always kept now
    features = {f.name for f in FEATURES if chosen.get(f.key)}
    with run_command():
        try:
            if not features and not yes and _is_interactive():
                features = _choose_features(path)
            created = create_project(path, features)
        except (KeyboardInterrupt, EOFError):
            # the writer takes back anything it wrote before the stop
            typer.echo("\nStopped; nothing written.", err=True)
            raise typer.Exit(130) from None
        spec = created.spec
        if created.own_files:
            typer.echo(
                f"Added the training files to {path} ({len(spec.features)} "
                f"feature(s)); kept your {', '.join(created.own_files)} as they "
                "are, recorded as your own (`scaffold update` leaves them alone)."
            )
        else:
            typer.echo(f"Created {path} ({len(spec.features)} feature(s)).")
        typer.echo(f"To repeat: {spec.command_line(path)}")
        mine = {"model.py", "data.py"} & set(created.own_files)
        run = "python train.py --fast-dev-run" if mine else "python train.py"
        here = Path(path).resolve() == Path.cwd().resolve()
        typer.echo(f"Next: {run}" if here else f"Next: cd {shlex.quote(path)} && {run}")


def _with_feature_options(function: Callable[..., None]) -> Callable[..., None]:
    """Give ``function`` one boolean option per registry feature, for Typer."""
    parameters = [
        inspect.Parameter(
            "path",
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
            annotation=Annotated[
                str,
                typer.Argument(
                    metavar="PATH",
                    help="Directory to create, or an existing one to add the training "
                    "files to (`.` included); its name names the project.",
                ),
            ],
        ),
        inspect.Parameter(
            "yes",
            inspect.Parameter.KEYWORD_ONLY,
            default=False,
            annotation=Annotated[
                bool, typer.Option("--yes", "-y", help="Do not ask; use the flags given.")
            ],
        ),
        inspect.Parameter(
            "force",
            inspect.Parameter.KEYWORD_ONLY,
            default=False,
            annotation=Annotated[
                bool,
                typer.Option(
                    "--force",
                    hidden=True,
                    help="No longer needed: an existing directory keeps its files.",
                ),
            ],
        ),
    ]
    for feature in FEATURES:
        parameters.append(
            inspect.Parameter(
                feature.key,
                inspect.Parameter.KEYWORD_ONLY,
                default=False,
                annotation=Annotated[
                    bool, typer.Option(feature.flag, help=feature.help)
                ],
            )
        )

    def command(**kwargs: Any) -> None:
        function(**kwargs)

    command.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    command.__doc__ = function.__doc__
    command.__name__ = function.__name__
    return command


app.command("new")(_with_feature_options(new_project))


@app.command("features")
def list_features() -> None:
    """List the features `scaffold new` can generate."""
    width = max(len(feature.flag) for feature in FEATURES)
    for feature in FEATURES:
        suffix = (
            f" [conflicts with {', '.join(feature.conflicts)}]"
            if feature.conflicts
            else ""
        )
        typer.echo(f"{feature.flag:<{width}}  {feature.help}{suffix}")


# -----------------------------------------------------------------------------
# keeping a project current: update, add, remove, diff, check

ProjectArgument = Annotated[
    Path, typer.Argument(help="The project directory (default: the current one).")
]
ProjectOption = Annotated[
    Path,
    typer.Option(
        "--path", "-C", help="The project directory (default: the current one)."
    ),
]
FeatureArguments = Annotated[
    list[str],
    typer.Argument(
        help="Feature names, as listed by `scaffold features`.",
        metavar="FEATURE",
        show_default=False,
    ),
]
DryRunOption = Annotated[
    bool, typer.Option("--dry-run", help="Print what would change; write nothing.")
]
AllowDirtyOption = Annotated[
    bool,
    typer.Option(
        "--allow-dirty",
        help="Update even files with uncommitted git changes.",
    ),
]


ContinueOption = Annotated[
    bool,
    typer.Option(
        "--continue",
        help="Only finish an update that was stopped part-way (any command does it first).",
    ),
]
AbortOption = Annotated[
    bool,
    typer.Option("--abort", help="Undo an update that was stopped part-way."),
]


def _finish_stopped(path: Path) -> None:
    """Finish an update of ``path`` that was stopped part-way, saying so."""
    from scaffold.update import finish_stopped

    line = finish_stopped(path)
    if line is not None:
        typer.echo(line)


def _update_with(
    path: Path,
    plan_function: Callable[[], Any],
    dry_run: bool,
    allow_dirty: bool,
    command: str,
) -> None:
    """Finish a stopped update, plan, check, apply unless --dry-run, report; exit
    1 when conflicts remain."""
    from scaffold.template_source import update_notice
    from scaffold.update import (  # lazy: keeps --help fast
        check_none_stopped,
        conflict_error,
        execute_plan,
        report_lines,
    )

    with run_command():
        if dry_run:
            check_none_stopped(path)
        else:
            _finish_stopped(path)
        notice = update_notice(path)  # templates of another source: said first
        if notice is not None:
            typer.echo(notice)
        plan = plan_function()
        execute_plan(plan, dry_run=dry_run, allow_dirty=allow_dirty, command=command)
        for line in report_lines(plan, dry_run=dry_run):
            typer.echo(line)
        error = conflict_error(plan)
        if error is not None and not dry_run:
            raise error


@app.command("update")
def update_command(
    path: ProjectArgument = Path("."),
    dry_run: DryRunOption = False,
    allow_dirty: AllowDirtyOption = False,
    resume: ContinueOption = False,
    abort: AbortOption = False,
) -> None:
    """Merge the installed templates into a project, keeping your edits.

    Refuses files with uncommitted git changes (unless --allow-dirty); exits 1
    when a conflict is left for you to resolve. Leaves your own files alone
    (model.py and data.py once you changed them, and the own_files of
    .scaffold/answers.json). An update stopped part-way is finished by the next
    scaffold command in the project, or undone by --abort.
    """
    from scaffold.update import finish_stopped, plan_update, undo_stopped

    if resume or abort:
        with run_command():
            if resume and abort:
                raise InvalidOptionsError("choose one of --continue and --abort")
            if abort:
                typer.echo(undo_stopped(path))
                return
            line = finish_stopped(path)
            typer.echo(line or f"no stopped update to finish in {path}")
        return
    _update_with(
        path, lambda: plan_update(path), dry_run, allow_dirty, "scaffold update"
    )


@app.command("add")
def add_command(
    features: FeatureArguments,
    path: ProjectOption = Path("."),
    dry_run: DryRunOption = False,
    allow_dirty: AllowDirtyOption = False,
) -> None:
    """Add features to a project: `scaffold add amp clip`.

    An update with changed answers: your edits are merged, never overwritten.
    """
    from scaffold.update import plan_features

    command = shlex.join(["scaffold", "add", *features])
    _update_with(
        path, lambda: plan_features(path, add=features), dry_run, allow_dirty, command
    )


@app.command("remove")
def remove_command(
    features: FeatureArguments,
    path: ProjectOption = Path("."),
    dry_run: DryRunOption = False,
    allow_dirty: AllowDirtyOption = False,
) -> None:
    """Remove features from a project: `scaffold remove amp`.

    Their code that you never edited goes; code of theirs that you edited stays,
    as conflicts for you to resolve.
    """
    from scaffold.update import plan_features

    command = shlex.join(["scaffold", "remove", *features])
    _update_with(
        path,
        lambda: plan_features(path, remove=features),
        dry_run,
        allow_dirty,
        command,
    )


def _locate(targets: list[Path]) -> tuple[Path, frozenset[str] | None]:
    """The project directory and the files (relative, posix) that ``targets`` name:
    a project directory, or files inside one project."""
    from scaffold.manifest import ANSWERS_FILE, RECORD_DIR

    if not targets:
        return Path("."), None
    if len(targets) == 1 and targets[0].is_dir():
        return targets[0], None
    projects, files = set(), set()
    for target in targets:
        absolute = target.absolute()
        root = next(
            (
                parent
                for parent in absolute.parents
                if (parent / RECORD_DIR / ANSWERS_FILE).is_file()
            ),
            None,
        )
        if root is None:
            raise ProjectError(f"{target} is not inside a scaffold project")
        projects.add(root)
        files.add(absolute.relative_to(root).as_posix())
    if len(projects) > 1:
        raise ProjectError("the files named belong to different projects")
    return projects.pop(), frozenset(files)


@app.command("diff")
def diff_command(
    targets: Annotated[
        list[Path] | None,
        typer.Argument(
            help="The project directory (default: the current one), or files in it.",
            metavar="[PATH]...",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Show what `scaffold update` would change, as a unified diff.

    Name a file to see only its change; for one of your own files (left alone
    by updates), the diff is what the template changed in it.
    """
    from scaffold.update import plan_diff, plan_update
    from scaffold.update.report import describe

    with run_command():
        path, files = _locate(targets or [])
        _finish_stopped(path)
        plan = plan_update(path)
        typer.echo(plan_diff(plan, files), nl=False)
        for change in plan.changes:
            if not change.writes and (files is None or change.path not in files):
                typer.echo(describe(change), err=True)


@app.command("check")
def check_command(path: ProjectArgument = Path(".")) -> None:
    """Exit 0 if a project is current, 1 if an update would change it, 2 on error.

    When it is behind, it says what the new templates bring to its features.
    """
    from scaffold.update import plan_update
    from scaffold.update.report import describe, news_lines

    with run_command():
        _finish_stopped(path)
        plan = plan_update(path)
        if plan.is_current:
            typer.echo(f"{plan.name} is up to date.")
            return
        for change in plan.changes:
            typer.echo(describe(change))
        for line in news_lines(plan):
            typer.echo(line)
        typer.echo(f"{plan.name} is behind: run `scaffold update {path}`.")
        raise typer.Exit(1)


# -----------------------------------------------------------------------------
# reading one feature at a time


@app.command("explain")
def explain_command(
    feature: Annotated[
        str,
        typer.Argument(
            help="A feature name, as listed by `scaffold features`.",
            metavar="FEATURE",
            show_default=False,
        ),
    ],
) -> None:
    """Explain a feature, then show the code it adds to the base project.

    The diff is rendered from the installed templates; it is coloured on a
    terminal and plain when piped.
    """
    from scaffold.explanations import explanation_text
    from scaffold.feature_diff import colorize_diff, feature_diff  # lazy: renders

    with run_command():
        text = explanation_text(feature)
        diff = feature_diff(feature)
    typer.echo(text)
    typer.echo(f"The code it adds: scaffold new demo -> scaffold new demo --{feature}")
    typer.echo("")
    typer.echo(colorize_diff(diff) if sys.stdout.isatty() else diff, nl=False)
