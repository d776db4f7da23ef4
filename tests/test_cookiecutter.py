"""templates/ is a real cookiecutter template that gives the same files as `scaffold new`."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from scaffold.features import compatible_with, feature_names
from scaffold.generate import build_project
from scaffold.render import template_root
from scaffold.spec import ProjectSpec

# the base, every feature alone, all of them (with --ddp, and with --fsdp) with and
# without multi-optim (its GAN demo), and two mixes of features that share code
FEATURE_SETS = [
    set(),
    *({name} for name in feature_names()),
    set(compatible_with("ddp")) - {"multi-optim"},
    set(compatible_with("ddp")),
    set(compatible_with("fsdp")),
    {"ddp", "amp"},
    {"accumulate", "clip", "early-stopping", "debug"},
]


def cookiecutter_render(spec: ProjectSpec, output_dir: Path) -> dict[str, str]:
    answers = [f"{key}={value}" for key, value in spec.cookiecutter_context().items()
               if key != "project_slug"]
    # the real command-line tool, as a cookiecutter user would run it
    subprocess.run(
        [sys.executable, "-m", "cookiecutter", "--no-input", "--output-dir",
         str(output_dir), str(template_root()), *answers],
        check=True, capture_output=True, text=True,
    )
    project = output_dir / spec.slug
    return {
        path.relative_to(project).as_posix(): path.read_text(encoding="utf-8")
        for path in sorted(project.rglob("*"))
        if path.is_file()
    }


@pytest.mark.parametrize("features", FEATURE_SETS, ids=lambda s: "+".join(sorted(s)) or "base")
def test_cookiecutter_gives_the_same_files(tmp_path, features):
    if shutil.which("cookiecutter") is None and not _has_module("cookiecutter"):
        pytest.fail("cookiecutter is a dependency of scaffold and must be installed")
    spec = ProjectSpec.create("my-proj", features)
    ours = build_project(spec)
    theirs = cookiecutter_render(spec, tmp_path)
    assert sorted(theirs) == sorted(ours)
    for path in ours:
        assert theirs[path] == ours[path], f"{path} differs"


def _has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None
