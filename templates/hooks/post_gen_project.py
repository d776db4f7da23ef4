"""Finish a cookiecutter render the way `scaffold new` does.

Removes the files of features that were not chosen and formats the Python files
with black, so that `cookiecutter templates --no-input ...` and `scaffold new ...`
give the same files.
"""

import shutil
from pathlib import Path

UNCHOSEN_FILES = [
{% if cookiecutter.slurm != "y" %}
    "slurm/train.sbatch",
    "slurm/sweep.sbatch",
{% endif %}
]


def remove_unchosen(root: Path) -> None:
    for relative in UNCHOSEN_FILES:
        (root / relative).unlink()
    for directory in sorted(root.rglob("*"), reverse=True):
        if directory.is_dir() and not any(directory.iterdir()):
            directory.rmdir()


def format_python(root: Path) -> None:
    try:
        import black
    except ImportError:  # black is optional for plain cookiecutter users
        return
    for path in sorted(root.rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        path.write_text(black.format_str(source, mode=black.Mode()), encoding="utf-8")


if __name__ == "__main__":
    project = Path.cwd()
    remove_unchosen(project)
    format_python(project)
    shutil.rmtree(project / "__pycache__", ignore_errors=True)
