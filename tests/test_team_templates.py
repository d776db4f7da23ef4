"""Templates a team owns: the path the README describes, performed with a fork.

A lab forks scaffold, names itself in templates/cookiecutter.json and edits the
templates (its cluster's sbatch header, its defaults); the fork's scaffold renders
new projects with them, and updates a project that upstream scaffold generated
before the edit, keeping the user's own changes. The record names the templates'
source and version, and the update says in one line that the source changed.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from scaffold import __version__

REPO = Path(__file__).resolve().parent.parent
TRAIN = "templates/{{cookiecutter.project_slug}}/train.py"
SBATCH = "templates/{{cookiecutter.project_slug}}/slurm/train.sbatch"
PARTITION = "#SBATCH --partition=ourlab-gpu"


def scaffold(checkout: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """`python -m scaffold ARGS` as installed from ``checkout`` (pip install -e)."""
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    return subprocess.run([sys.executable, "-m", "scaffold", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120, env=env)


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, (path, old)
    path.write_text(text.replace(old, new))


def fork(root: Path) -> Path:
    """A lab's fork of this checkout with its own defaults, as README describes."""
    lab = root / "ourlab-scaffold"
    ignore = shutil.ignore_patterns("__pycache__")
    for part in ("scaffold", "templates"):
        shutil.copytree(REPO / part, lab / part, ignore=ignore)
    settings = json.loads((lab / "templates/cookiecutter.json").read_text())
    settings.update({"_templates_source": "ourlab", "_templates_version": "1.0"})
    (lab / "templates/cookiecutter.json").write_text(json.dumps(settings, indent=2))
    # the house style: log more often; the cluster: a partition of its own
    edit(lab / TRAIN, "log_every: int = option(50,", "log_every: int = option(10,")
    edit(lab / SBATCH, "#SBATCH --time=24:00:00\n",
         f"#SBATCH --time=24:00:00\n{PARTITION}\n")
    return lab


def answers(project: Path) -> dict:
    return json.loads((project / ".scaffold/answers.json").read_text())


def test_a_fork_renders_its_templates_and_updates_an_upstream_project(tmp_path):
    # before the edit: a project from upstream scaffold, then edited by its user
    result = scaffold(REPO, "new", "proj", "--slurm", "--yes", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    project = tmp_path / "proj"
    assert answers(project)["templates"] == {"source": "scaffold", "version": __version__}
    edit(project / "train.py", "option(1337,", "option(7,")  # the user's own change

    lab = fork(tmp_path)
    # render: a new project from the lab's templates
    result = scaffold(lab, "new", "labproj", "--slurm", "--yes", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    labproj = tmp_path / "labproj"
    assert "log_every: int = option(10," in (labproj / "train.py").read_text()
    assert PARTITION in (labproj / "slurm/train.sbatch").read_text()
    assert answers(labproj)["templates"] == {"source": "ourlab", "version": "1.0"}
    black = subprocess.run([sys.executable, "-m", "black", "--check", "-q", str(labproj)],
                           capture_output=True, text=True)
    assert black.returncode == 0, black.stderr  # the edit kept the render black-clean

    # update: the upstream project takes the lab's templates, keeping its edit
    result = scaffold(lab, "update", "proj", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    first = result.stdout.splitlines()[0]
    assert first == (f"note: this project was made from scaffold {__version__}'s "
                     "templates; these are ourlab 1.0's, and the update merges them in")
    assert re.search(r"^merged +train\.py", result.stdout, re.MULTILINE), result.stdout
    train = (project / "train.py").read_text()
    assert "option(7," in train and "log_every: int = option(10," in train
    assert PARTITION in (project / "slurm/train.sbatch").read_text()
    assert answers(project)["templates"] == {"source": "ourlab", "version": "1.0"}

    # from now on the source is the same: no note, and nothing to do
    result = scaffold(lab, "update", "proj", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "note:" not in result.stdout and "is up to date" in result.stdout


def test_an_old_record_was_made_by_upstream_scaffold(tmp_path):
    from scaffold.template_source import update_notice

    old = REPO / "tests/fixtures/before_restructure/myproject"  # scaffold 0.1.0's record
    assert "templates" not in answers(old)
    assert update_notice(old) is None  # upstream templates: nothing to say
    lab = fork(tmp_path)
    assert update_notice(old, lab / "templates") == (
        "note: this project was made from scaffold 0.1.0's templates; these are "
        "ourlab 1.0's, and the update merges them in")
