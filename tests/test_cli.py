"""The scaffold command line: help, version, features, `new`, and every bad input."""

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from scaffold import __version__
from scaffold.cli import app
from scaffold.features import FEATURES
from scaffold.manifest import read_manifest

runner = CliRunner()


def scaffold(*args: str, cwd: Path | None = None, input: str | None = None):
    """Run the real console entry point in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "scaffold", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        input=input,
        timeout=120,
    )


def tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_help_lists_commands_and_does_not_import_heavy_modules():
    code = (
        "import sys; from scaffold.cli import app\n"
        "try:\n    app(['--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('torch', 'black', 'jinja2', 'cookiecutter')"
        " if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert "new" in result.stdout and "features" in result.stdout
    assert result.stdout.strip().endswith("[]")


def test_version():
    result = scaffold("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"scaffold {__version__}"


def test_every_command_has_help():
    for command in ("new", "features"):
        result = runner.invoke(app, [command, "--help"])
        assert result.exit_code == 0, result.output
    new_help = runner.invoke(app, ["new", "--help"]).output
    for feature in FEATURES:
        assert feature.flag in new_help


def test_features_lists_each_flag_with_its_help():
    result = runner.invoke(app, ["features"])
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert len(lines) == len(FEATURES)
    for feature, line in zip(FEATURES, lines, strict=True):
        assert line.startswith(feature.flag)
        assert feature.help in line


def test_new_writes_the_project_and_its_record(tmp_path):
    result = scaffold("new", "myproj", "--ddp", "--amp", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "scaffold new myproj --ddp --amp" in result.stdout
    project = tmp_path / "myproj"
    for name in ("train.py", "model.py", "data.py", "README.md", "requirements.txt",
                 ".gitignore", "tests/test_train.py"):
        assert (project / name).is_file(), name
    manifest = read_manifest(project)
    assert manifest.spec.features == {"ddp", "amp"}
    assert manifest.base["train.py"] == (project / "train.py").read_text()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "staging left"


def test_new_without_flags_in_a_terminal_asks_and_confirms(tmp_path, monkeypatch):
    # CliRunner's stdin is not a TTY; pretend it is. The first question is the
    # one of several processes (1: ddp); Enter keeps every other default (no),
    # and the last Enter confirms the write.
    monkeypatch.setattr("scaffold.cli._is_interactive", lambda: True)
    result = runner.invoke(app, ["new", str(tmp_path / "asked")], input="1\n" + "\n" * 20)
    assert result.exit_code == 0, result.output
    assert f"To repeat: scaffold new {tmp_path / 'asked'} --ddp" in result.output
    assert read_manifest(tmp_path / "asked").spec.features == {"ddp"}


def test_declining_the_confirmation_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr("scaffold.cli._is_interactive", lambda: True)
    questions = len(FEATURES) - 1  # ddp and fsdp are one question
    answers = "\n" * questions + "n\n"
    result = runner.invoke(app, ["new", str(tmp_path / "asked")], input=answers)
    assert result.exit_code == 1, result.output
    assert "Nothing written." in result.output
    assert list(tmp_path.iterdir()) == []


def test_a_bad_name_is_refused_before_any_question(tmp_path, monkeypatch):
    monkeypatch.setattr("scaffold.cli._is_interactive", lambda: True)
    result = runner.invoke(app, ["new", str(tmp_path / "9lives")], input="")
    assert result.exit_code == 2
    assert "not a Python module name" in result.output
    assert "Several processes" not in result.output


def test_yes_skips_the_questions(tmp_path, monkeypatch):
    monkeypatch.setattr("scaffold.cli._is_interactive", lambda: True)
    result = runner.invoke(app, ["new", str(tmp_path / "quiet"), "--yes"])
    assert result.exit_code == 0, result.output
    assert read_manifest(tmp_path / "quiet").spec.features == set()


@pytest.mark.parametrize(
    "name, message",
    [
        ("", "empty"),
        ("..", "single directory name"),
        ("9lives", "not a Python module name"),
        ("class", "keyword"),
        ("my-proj!", "not a Python module name"),
        ("a" * 256, "at most 255"),
    ],
)
def test_bad_project_names_fail_with_one_line_and_write_nothing(tmp_path, name, message):
    before = tree(tmp_path)
    result = scaffold("new", name, cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert tree(tmp_path) == before


def test_name_is_the_last_part_of_a_path(tmp_path):
    (tmp_path / "parent").mkdir()
    result = scaffold("new", "parent/child", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert read_manifest(tmp_path / "parent" / "child").spec.name == "child"


def test_a_name_of_255_bytes_is_a_project(tmp_path):
    name = "a" * 255  # the longest directory name of common file systems
    result = scaffold("new", name, "--yes", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert read_manifest(tmp_path / name).spec.name == name


def test_a_path_longer_than_the_system_allows_is_one_line(tmp_path):
    # each part is a valid name, the whole path exceeds PATH_MAX (4096 on Linux)
    deep = Path(*["d" * 250] * 17, "proj")
    result = scaffold("new", str(deep), "--yes", cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert list(tmp_path.iterdir()) == []


def test_the_repeat_and_next_lines_survive_a_shell(tmp_path):
    result = scaffold("new", "My Project", "--yes", "--amp", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = dict(ln.split(": ", 1) for ln in result.stdout.splitlines() if ": " in ln)
    assert shlex.split(lines["To repeat"]) == ["scaffold", "new", "My Project", "--amp"]
    # the Next line, run by a shell, enters the project
    cd_part = lines["Next"].split(" && ")[0]
    shell = subprocess.run(
        ["sh", "-c", f"{cd_part} && ls train.py"], cwd=tmp_path, capture_output=True
    )
    assert shell.returncode == 0, shell.stderr


def test_missing_parent_is_refused(tmp_path):
    result = scaffold("new", "nowhere/proj", cwd=tmp_path)
    assert result.returncode == 2
    assert "does not exist" in result.stderr
    assert not (tmp_path / "nowhere").exists()


def test_an_existing_directory_gets_the_project_and_keeps_its_files(tmp_path):
    target = tmp_path / "proj"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    (target / "model.py").write_text("# my own model\n")
    result = scaffold("new", "proj", cwd=tmp_path)  # no --force needed
    assert result.returncode == 0, result.stderr
    assert "kept your model.py" in result.stdout
    assert "python train.py --fast-dev-run" in result.stdout
    assert (target / "notes.txt").read_text() == "mine"
    assert (target / "model.py").read_text() == "# my own model\n"
    assert (target / "train.py").is_file() and (target / "data.py").is_file()
    answers = json.loads((target / ".scaffold/answers.json").read_text())
    assert answers["own_files"] == ["model.py"]
    # the record's base is the render, so that an update can tell what changed
    assert read_manifest(target).base["model.py"] != "# my own model\n"

    result = scaffold("new", "proj", cwd=tmp_path)
    assert result.returncode == 2
    assert "already a scaffold project" in result.stderr


def test_a_directory_with_its_own_train_py_is_refused(tmp_path):
    target = tmp_path / "proj"
    target.mkdir()
    (target / "train.py").write_text("print('my loop')\n")
    result = scaffold("new", "proj", "--force", cwd=tmp_path)
    assert result.returncode == 2
    assert "own train.py" in result.stderr and "rename yours" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert tree(target) == {"train.py": b"print('my loop')\n"}


def test_unwritable_parent_is_refused_by_the_writer(tmp_path, monkeypatch):
    # Tests may run as root, whom permission bits do not stop: fake the answer.
    from scaffold.errors import TargetError
    from scaffold.writer import check_target

    monkeypatch.setattr(os, "access", lambda path, mode: False)
    with pytest.raises(TargetError, match="permission denied"):
        check_target(tmp_path / "proj", {"train.py": ""})


def test_unknown_option_is_an_error(tmp_path):
    result = scaffold("new", "proj", "--no-such-flag", cwd=tmp_path)
    assert result.returncode == 2
    assert "no-such-flag" in result.stderr
    assert not (tmp_path / "proj").exists()


def test_a_failure_while_writing_leaves_nothing(tmp_path, monkeypatch):
    from scaffold import atomic
    from scaffold.errors import TargetError
    from scaffold.project import create_project

    real_fdopen = os.fdopen
    calls = []

    def failing_fdopen(fd, *args, **kwargs):
        # the third file that scaffold writes fails halfway, as on a full disk
        stream = real_fdopen(fd, *args, **kwargs)
        calls.append(fd)
        if len(calls) == 3:
            stream.write(b"half a file")
            stream.close()
            raise OSError(28, "No space left on device")
        return stream

    monkeypatch.setattr(atomic.os, "fdopen", failing_fdopen)
    with pytest.raises(TargetError, match="No space left"):
        create_project(tmp_path / "proj", set())
    assert len(calls) == 3
    assert list(tmp_path.iterdir()) == []


def test_debug_env_shows_the_traceback(tmp_path):
    env = {**os.environ, "SCAFFOLD_DEBUG": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "scaffold", "new", "9lives"],
        cwd=tmp_path, capture_output=True, text=True, env=env,
    )
    assert result.returncode != 0
    assert "Traceback" in result.stderr and "InvalidSpecError" in result.stderr
