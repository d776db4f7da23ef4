"""`scaffold new` where the code already is: a git repository holding a model of the
user's own (a zoo model), its data, a README and other files.

`scaffold new .` inside it (and `scaffold new PATH` from outside) adds the training
files and changes nothing that was there; the model.py, data.py and README.md that
were there are recorded as the user's own; the first `--fast-dev-run` says in one
line what a model.py/data.py written before train.py still lacks, and trains once
nothing is missing.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import FIXTURES, train_env

from scaffold.render import render_project
from scaffold.spec import ProjectSpec

REPO = Path(__file__).resolve().parent.parent
CNN = FIXTURES / "zoo" / "cnn"  # BatchNorm, augmentation, metrics: a model of its own
GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]


def scaffold(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """`python -m scaffold ARGS` of this checkout, as a user runs it."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "scaffold", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120, env=env)


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file() and ".git" not in p.parts}


def user_repository(root: Path, model: str, data: str) -> Path:
    """A git repository with the user's model.py, data.py, README.md and more."""
    repo = root / "my-cnn"
    (repo / "notebooks").mkdir(parents=True)
    (repo / "model.py").write_text(model)
    (repo / "data.py").write_text(data)
    (repo / "README.md").write_text("# My CNN\n\nOur own model.\n")
    (repo / "notebooks" / "explore.txt").write_text("plots go here\n")
    (repo / "pyproject.toml").write_text('[project]\nname = "my-cnn"\n')
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run([*GIT, "add", "-A"], cwd=repo, check=True)
    subprocess.run([*GIT, "commit", "-q", "-m", "my model"], cwd=repo, check=True)
    return repo


def fast_dev_run(project: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "train.py", "--fast-dev-run"], cwd=project,
                          capture_output=True, text=True, timeout=300, env=train_env())


def test_new_dot_in_a_repository_with_a_model_adds_the_loop_and_keeps_everything(
    tmp_path,
):
    model, data = (CNN / "model.py").read_text(), (CNN / "data.py").read_text()
    # written before train.py: the loss and the datasets under names of their own
    repo = user_repository(
        tmp_path,
        model.replace("def compute_loss(", "def my_loss("),
        data.replace("def build_datasets(", "def make_splits("),
    )
    before = tree(repo)

    result = scaffold("new", ".", cwd=repo)  # no --yes, no --force: not a terminal
    assert result.returncode == 0, result.stderr
    assert "kept your README.md, data.py, model.py" in result.stdout
    assert "Next: python train.py --fast-dev-run" in result.stdout

    after = tree(repo)
    assert {path: after[path] for path in before} == before, "an existing file changed"
    rendered = render_project(ProjectSpec.create("my-cnn"))
    added = sorted(set(after) - set(before))
    assert [p for p in added if not p.startswith(".scaffold/")] == sorted(
        set(rendered) - {"model.py", "data.py", "README.md"})
    answers = json.loads((repo / ".scaffold" / "answers.json").read_text())
    assert answers["project_name"] == "my-cnn"  # the directory's name
    assert answers["own_files"] == ["README.md", "data.py", "model.py"]
    assert answers["templates"]["source"] == "scaffold"
    # the generated README is not lost: the record keeps it
    assert "## I already have a model" in (repo / ".scaffold/base/README.md").read_text()

    first = fast_dev_run(repo)
    assert first.returncode != 0
    lines = first.stderr.strip().splitlines()
    assert len(lines) == 1, first.stderr  # one line, no traceback
    assert lines[0].startswith("not ready to train: ")
    assert "data.py lacks build_datasets(cfg)" in lines[0]
    assert "model.py lacks compute_loss(model, batch)" in lines[0]
    assert "build_model" not in lines[0]  # it has that one

    (repo / "model.py").write_text(model)
    (repo / "data.py").write_text(data)
    second = fast_dev_run(repo)
    assert second.returncode == 0, second.stderr
    assert "final (best checkpoint)" in second.stdout
    assert not (repo / "runs").exists()  # a fast-dev-run writes nothing


def test_new_path_from_the_parent_and_a_missing_data_py(tmp_path):
    repo = user_repository(tmp_path, (CNN / "model.py").read_text(), "")
    (repo / "data.py").unlink()
    before = tree(repo)
    result = scaffold("new", repo.name, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    after = tree(repo)
    assert {path: after[path] for path in before} == before
    answers = json.loads((repo / ".scaffold" / "answers.json").read_text())
    assert answers["own_files"] == ["README.md", "model.py"]  # data.py is the demo's
    assert after["data.py"] == answers_base(repo, "data.py")


def answers_base(project: Path, path: str) -> bytes:
    return (project / ".scaffold" / "base" / path).read_bytes()


def test_an_import_that_fails_inside_the_users_model_keeps_its_traceback(tmp_path):
    repo = user_repository(tmp_path, "import no_such_package_here\n",
                           (CNN / "data.py").read_text())
    assert scaffold("new", ".", cwd=repo).returncode == 0
    result = fast_dev_run(repo)
    assert result.returncode != 0
    assert "Traceback" in result.stderr
    assert "No module named 'no_such_package_here'" in result.stderr


def test_add_leaves_the_users_own_files_alone(tmp_path):
    repo = user_repository(tmp_path, (CNN / "model.py").read_text(),
                           (CNN / "data.py").read_text())
    assert scaffold("new", ".", cwd=repo).returncode == 0
    subprocess.run([*GIT, "add", "-A"], cwd=repo, check=True)
    subprocess.run([*GIT, "commit", "-q", "-m", "scaffold"], cwd=repo, check=True)
    own = {name: (repo / name).read_bytes() for name in ("model.py", "data.py", "README.md")}
    result = scaffold("add", "clip", cwd=repo)  # changes the generated README
    assert result.returncode == 0, result.stdout + result.stderr
    assert {name: (repo / name).read_bytes() for name in own} == own
    assert "clip" in (repo / "train.py").read_text()
    answers = json.loads((repo / ".scaffold" / "answers.json").read_text())
    assert answers["own_files"] == ["README.md", "data.py", "model.py"]


@pytest.mark.parametrize("stop", [KeyboardInterrupt, OSError])
def test_a_stop_while_moving_files_in_leaves_the_directory_as_it_was(
    tmp_path, monkeypatch, stop
):
    from scaffold import writer
    from scaffold.errors import TargetError
    from scaffold.project import create_project

    repo = tmp_path / "mine"
    repo.mkdir()
    (repo / "model.py").write_text("# my model\n")
    (repo / "tests").mkdir()  # a directory the project also writes into
    before = tree(repo)
    real_replace = writer.os.replace
    moves = []

    def replace_then_stop(source, destination):
        moves.append(destination)
        if len(moves) == 4:  # after three files were moved in, as Ctrl-C would
            raise stop()
        real_replace(source, destination)

    monkeypatch.setattr(writer.os, "replace", replace_then_stop)
    with pytest.raises(TargetError if stop is OSError else KeyboardInterrupt):
        create_project(repo, {"slurm"})  # .scaffold/base/: directories made by the move
    assert len(moves) == 4
    assert tree(repo) == before
    assert sorted(p.name for p in repo.iterdir()) == ["model.py", "tests"]
    assert list((repo / "tests").iterdir()) == []
