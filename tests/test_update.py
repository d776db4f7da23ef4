"""`scaffold update / add / remove / diff / check`: new renders merged into edited projects.

The story tests follow copier's style: a "v1" template set (a copy of the real
templates), a project generated from it, the user's edits, a "v2" template set
with a few changes, `scaffold update`, then the exact merged text, conflict
markers, exit code and report. The expected texts are built by plain string
replacement on the renders, never by the merge code under test.
"""

import itertools
import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import FIXTURES, cached_build, write_files
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import scaffold.render
import scaffold.update.plan
from scaffold import __version__
from scaffold.cli import app
from scaffold.errors import InvalidSpecError
from scaffold.features import feature_names
from scaffold.manifest import answers_text, manifest_files
from scaffold.render import PROJECT_DIR_NAME
from scaffold.spec import ProjectSpec
from scaffold.template_source import installed_source
from scaffold.update import (
    NEW_SUFFIX,
    execute_plan,
    plan_features,
    plan_update,
    report_lines,
)

NAME = "proj"
LABEL_BASE = f"base (scaffold {__version__})"
LABEL_NEW = f"scaffold {__version__} (new template)"

# Lines of train.py the stories edit, found by their start (the rest may evolve).
SEED = "    seed: int = option("
LR = "    lr: float = option("
DOC = "The model and data live in model.py and data.py"

USER_SEED = '    seed: int = option(42, "my seed: the answer")'
USER_LR = (
    '    lr: float = option(1e-3, "peak learning rate (AdamW), tuned for my data")'
)
V2_SEED = (
    '    seed: int = option(0, "seeds model init, shuffling and every rank\'s RNG")'
)
NEW_FILE = "docs/UPGRADING.md"  # a file only v2 has
V2_NEW_FILE = "# Upgrading {{ cookiecutter.project_name }}\n\nRun `scaffold update`.\n"
V2_REQUIREMENT = "numpy>=1.26\n"


# -----------------------------------------------------------------------------
# helpers

@pytest.fixture(autouse=True)
def _cache_renders(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scaffold.update.plan, "build_project", cached_build)


def spec(*features: str) -> ProjectSpec:
    return ProjectSpec.create(NAME, set(features))


def new_project(root: Path, template_dir: Path | None = None, features=()) -> Path:
    """What `scaffold new` writes, rendered from ``template_dir``."""
    files = cached_build(spec(*features), template_dir)
    record = manifest_files(
        spec(*features), files, templates=installed_source(template_dir)
    )
    return write_files(root / NAME, {**files, **record})


def use_templates(monkeypatch: pytest.MonkeyPatch, root: Path) -> None:
    """Make ``root`` the installed templates, as a new scaffold release would."""
    monkeypatch.setattr(scaffold.render, "template_root", lambda: root)


def invoke(*args):
    return CliRunner().invoke(app, [str(arg) for arg in args])


def tree(root: Path) -> dict[str, bytes]:
    """Every file under root, as bytes (the record in .scaffold/ included)."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def project_files(root: Path) -> dict[str, str]:
    """The project's own files (without the .scaffold/ record), as text."""
    return {
        path: data.decode()
        for path, data in tree(root).items()
        if not path.startswith(".scaffold/")
    }


def line(text: str, start: str) -> str:
    """The one line of ``text`` beginning with ``start``."""
    found = [ln for ln in text.splitlines() if ln.startswith(start)]
    assert len(found) == 1, f"expected one line starting {start!r}, found {found}"
    return found[0]


def replace_line(text: str, old: str, new: str) -> str:
    assert text.count(old + "\n") == 1, f"{old!r} is not a unique line"
    return text.replace(old + "\n", new + "\n")


def v2_doc(doc: str) -> str:
    return doc.replace("data.py", "data.py (see README.md)", 1)


def v3_doc(doc: str) -> str:
    return doc.replace("model.py", "your model.py", 1)


def conflict(ours: str, base: str, theirs: str) -> str:
    """The exact region update writes for one overlapping change of one line."""
    return (
        f"<<<<<<< yours\n{ours}\n||||||| {LABEL_BASE}\n{base}\n"
        f"=======\n{theirs}\n>>>>>>> {LABEL_NEW}\n"
    )


@dataclass(frozen=True)
class Templates:
    v1: Path  # a copy of the real templates
    v2: Path  # v1 with a new seed default, a docstring fix, a new file, one more
    #           requirement, and no .gitignore
    v3: Path  # v2 with one more docstring edit


def _edit_template(root: Path, path: str, edit) -> None:
    target = root / PROJECT_DIR_NAME / path
    target.write_text(edit(target.read_text()))


@pytest.fixture(scope="module")
def templates(tmp_path_factory: pytest.TempPathFactory) -> Templates:
    root = tmp_path_factory.mktemp("templates")
    v1, v2, v3 = root / "v1", root / "v2", root / "v3"
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(scaffold.render.template_root(), v1, ignore=ignore)
    shutil.copytree(v1, v2)

    def train_v2(text: str) -> str:
        text = replace_line(text, line(text, SEED), V2_SEED)
        return replace_line(text, line(text, DOC), v2_doc(line(text, DOC)))

    _edit_template(v2, "train.py", train_v2)
    _edit_template(v2, "requirements.txt", lambda text: text + V2_REQUIREMENT)
    (v2 / PROJECT_DIR_NAME / NEW_FILE).parent.mkdir()
    (v2 / PROJECT_DIR_NAME / NEW_FILE).write_text(V2_NEW_FILE)
    (v2 / PROJECT_DIR_NAME / ".gitignore").unlink()
    shutil.copytree(v2, v3)
    _edit_template(
        v3,
        "train.py",
        lambda text: replace_line(text, line(text, DOC), v3_doc(line(text, DOC))),
    )
    return Templates(v1, v2, v3)


# -----------------------------------------------------------------------------
# 1. stories: v1, the user's edits, v2, update


def _edit_like_a_user(project: Path, train_v1: str) -> None:
    """Swap the model, edit two hunks of train.py, delete a file, add a file."""
    (project / "model.py").write_text((FIXTURES / "tiny_model.py").read_text())
    text = replace_line(train_v1, line(train_v1, SEED), USER_SEED)
    (project / "train.py").write_text(replace_line(text, line(text, LR), USER_LR))
    (project / "requirements.txt").unlink()
    (project / "notes.md").write_text("my notes\n")


def _update_into_conflict(tmp_path, templates, monkeypatch):
    project = new_project(tmp_path, templates.v1)
    train_v1 = cached_build(spec(), templates.v1)["train.py"]
    _edit_like_a_user(project, train_v1)
    use_templates(monkeypatch, templates.v2)
    return project, train_v1, invoke("update", project)


def test_story_update_merges_edits_and_marks_the_overlapping_hunk(
    tmp_path, templates, monkeypatch
):
    project, train_v1, result = _update_into_conflict(tmp_path, templates, monkeypatch)
    v2 = cached_build(spec(), templates.v2)
    seed, lr, doc = line(train_v1, SEED), line(train_v1, LR), line(train_v1, DOC)

    assert result.exit_code == 1, result.output
    assert result.stdout.splitlines() == [
        "removed    .gitignore",
        f"added      {NEW_FILE}",
        (
            "skipped    requirements.txt: you deleted it, so it stays deleted "
            "(the template changed it)"
        ),
        "conflict   train.py: 1 conflicting change(s) marked with <<<<<<< yours",
        "Updated proj: 3 file(s) changed, 1 conflict(s).",
    ]
    assert result.stderr == (
        "error: conflicts in 1 file(s): train.py; resolve the <<<<<<< markers (or "
        f"compare with the *{NEW_SUFFIX} file and delete it), then run `scaffold "
        "update` again\n"
    )
    # the hunk only the user changed, the hunk only the template changed, and the
    # hunk both changed, between labelled markers
    expected = replace_line(train_v1, lr, USER_LR)
    expected = replace_line(expected, doc, v2_doc(doc))
    expected = expected.replace(seed + "\n", conflict(USER_SEED, seed, V2_SEED))
    assert (project / "train.py").read_text() == expected
    assert (project / "model.py").read_text() == (
        FIXTURES / "tiny_model.py"
    ).read_text()
    assert not (project / "requirements.txt").exists()
    assert not (project / ".gitignore").exists()
    assert (
        (project / NEW_FILE).read_text()
        == v2[NEW_FILE]
        == "# Upgrading proj\n\nRun `scaffold update`.\n"
    )
    assert (project / "notes.md").read_text() == "my notes\n"
    assert (project / "data.py").read_text() == v2["data.py"]
    # the record: the conflicted file keeps its old base, and remembers the render
    # it conflicted with; every other base advanced
    record = project / ".scaffold"
    assert (record / "base/train.py").read_text() == train_v1
    assert (record / "conflicts/train.py").read_text() == v2["train.py"]
    assert (record / "base/requirements.txt").read_text() == v2["requirements.txt"]
    assert (record / "base" / NEW_FILE).read_text() == v2[NEW_FILE]
    assert not (record / "base/.gitignore").exists()
    assert json.loads((record / "answers.json").read_text())["features"] == []


def test_story_a_resolved_conflict_does_not_come_back(tmp_path, templates, monkeypatch):
    project, train_v1, _ = _update_into_conflict(tmp_path, templates, monkeypatch)
    conflicted = tree(project)

    # unresolved: update leaves everything alone and says why
    again = invoke("update", project)
    assert again.exit_code == 1
    assert again.stdout.splitlines()[0] == (
        "unresolved train.py: resolve the last update's conflict first (markers)"
    )
    assert tree(project) == conflicted
    assert invoke("check", project).exit_code == 1

    # the user keeps their seed; the update that follows converges
    text = (project / "train.py").read_text()
    resolved = re.sub(
        r"<<<<<<< yours\n.*?>>>>>>> [^\n]*\n", USER_SEED + "\n", text, flags=re.DOTALL
    )
    assert resolved != text
    (project / "train.py").write_text(resolved)
    settled = invoke("update", project)
    assert settled.exit_code == 0, settled.output
    assert settled.stdout == f"proj is up to date with scaffold {__version__}.\n"
    assert (project / "train.py").read_text() == resolved
    assert (project / ".scaffold/base/train.py").read_text() == cached_build(
        spec(), templates.v2
    )["train.py"]
    assert not (project / ".scaffold/conflicts").exists()
    assert invoke("check", project).exit_code == 0

    # v3 changes another hunk: it merges cleanly, the resolved seed stays (with
    # v1 as base, the seed hunk would conflict again)
    use_templates(monkeypatch, templates.v3)
    result = invoke("update", project)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == "merged     train.py: your changes kept"
    doc_v2 = v2_doc(line(train_v1, DOC))
    assert (project / "train.py").read_text() == replace_line(
        resolved, doc_v2, v3_doc(doc_v2)
    )


def test_story_files_that_cannot_be_merged_are_kept_and_reported(
    tmp_path, templates, monkeypatch
):
    project = new_project(tmp_path, templates.v1)
    (project / ".gitignore").write_text("my_data/\n")  # v2 no longer generates it
    (project / NEW_FILE).parent.mkdir()
    (project / NEW_FILE).write_text("# my upgrade notes\n")  # v2 adds this file
    binary = b"\x00\x01 not text \xff"
    (project / "requirements.txt").write_bytes(binary)  # v2 changes it
    use_templates(monkeypatch, templates.v2)
    v2 = cached_build(spec(), templates.v2)

    result = invoke("update", project)
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        "kept       .gitignore: you changed it and the templates no longer generate it",
        (
            f"conflict   {NEW_FILE}: you created a file with this name; the "
            f"template's is in {NEW_FILE}{NEW_SUFFIX}"
        ),
        (
            "conflict   requirements.txt: not a text file, kept yours; the new "
            f"version is in requirements.txt{NEW_SUFFIX}"
        ),
        "updated    train.py",
        "Updated proj: 3 file(s) changed, 2 conflict(s).",
    ]
    assert (project / ".gitignore").read_text() == "my_data/\n"
    assert (project / NEW_FILE).read_text() == "# my upgrade notes\n"
    assert (project / f"{NEW_FILE}{NEW_SUFFIX}").read_text() == v2[NEW_FILE]
    assert (project / "requirements.txt").read_bytes() == binary
    assert (project / f"requirements.txt{NEW_SUFFIX}").read_text() == v2[
        "requirements.txt"
    ]
    assert (project / "train.py").read_text() == v2["train.py"]

    # resolved by deleting the new versions: nothing comes back
    (project / f"{NEW_FILE}{NEW_SUFFIX}").unlink()
    (project / f"requirements.txt{NEW_SUFFIX}").unlink()
    result = invoke("update", project)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "kept       .gitignore: you changed it and the templates no longer generate it",
        f"proj is up to date with scaffold {__version__}.",
    ]
    assert (project / NEW_FILE).read_text() == "# my upgrade notes\n"
    assert (project / "requirements.txt").read_bytes() == binary
    assert not list(project.glob(f"**/*{NEW_SUFFIX}"))
    assert invoke("check", project).exit_code == 0


def test_removing_a_feature_keeps_edited_feature_code_as_a_conflict(tmp_path):
    with_amp, without = (
        cached_build(spec("amp"))["train.py"],
        cached_build(spec())["train.py"],
    )
    counts = Counter(with_amp.splitlines())
    amp_only = [
        ln
        for ln in with_amp.splitlines()
        if ln.strip()
        and counts[ln] == 1
        and ln not in without.splitlines()
        and not ln.rstrip().endswith("\\")
        and with_amp.count(ln + "\n") == 1  # not also the tail of a longer line
    ]
    assert amp_only, "amp adds no lines of its own to train.py"
    edited_line = amp_only[len(amp_only) // 2]
    project = new_project(tmp_path, None, ["amp"])
    mine = edited_line + "  # tuned for my GPU"
    (project / "train.py").write_text(replace_line(with_amp, edited_line, mine))

    result = invoke("remove", "amp", "--path", project)
    assert result.exit_code == 1
    assert "conflict   train.py" in result.stdout
    text = (project / "train.py").read_text()
    regions = re.findall(
        r"<<<<<<< yours\n(.*?)\|\|\|\|\|\|\| [^\n]*\n(.*?)=======\n(.*?)>>>>>>> [^\n]*\n",
        text,
        flags=re.DOTALL,
    )
    assert any(mine + "\n" in ours for ours, _, _ in regions)
    # every other amp line went: taking the template's side of each conflict gives
    # exactly the render without amp
    theirs_side = re.sub(
        r"<<<<<<< yours\n.*?=======\n(.*?)>>>>>>> [^\n]*\n",
        r"\1",
        text,
        flags=re.DOTALL,
    )
    assert theirs_side == without
    assert (
        json.loads((project / ".scaffold/answers.json").read_text())["features"] == []
    )


# -----------------------------------------------------------------------------
# edits that no feature can touch, placed by their (unique) lines


def _edit_sites(start: str, renders: list[str]) -> list[tuple[str, str]]:
    """Where an edit cannot touch lines any of ``renders`` changes: (kind, line).

    A line qualifies when it and its neighbours appear exactly once, as the same
    consecutive lines, in every render; an insertion goes between two such lines.
    """
    lines = start.splitlines()
    counts = []
    for render in renders:
        other = render.splitlines()
        windows = Counter(tuple(other[k : k + 3]) for k in range(len(other) - 2))
        windows.update(tuple(other[k : k + 4]) for k in range(len(other) - 3))
        counts.append((Counter(other), windows))

    def once_everywhere(window: tuple[str, ...]) -> bool:
        return all(
            windows[window] == 1 and all(lines_[w] == 1 for w in window[1:-1])
            for lines_, windows in counts
        )

    sites = []
    for i in range(1, len(lines) - 1):
        middle = lines[i]
        if (
            middle.strip()
            and not middle.endswith("\\")
            and once_everywhere(tuple(lines[i - 1 : i + 2]))
        ):
            sites.append(("modify", middle))
        if i >= 2 and once_everywhere(tuple(lines[i - 2 : i + 2])):
            sites.append(("insert", middle))
    return sites


def _apply_edits(text: str, edits: list[tuple[int, str, str]]) -> str:
    """Apply numbered edits, each placed by its (unique) line, to any render.

    ("modify", line) appends a comment to the line; ("insert", line) puts a
    comment line before it.
    """
    lines = text.splitlines()
    where = {anchor: lines.index(anchor) for _, _, anchor in edits}
    notes: dict[int, list[str]] = {}
    for number, kind, anchor in edits:
        if kind == "modify":
            lines[where[anchor]] = f"{anchor}  # user edit {number}"
        else:
            notes.setdefault(where[anchor], []).append(f"# user note {number}")
    for at in sorted(notes, reverse=True):
        lines[at:at] = notes[at]
    return "\n".join(lines) + "\n"


# -----------------------------------------------------------------------------
# 2. add and remove


def _user_edits(
    files: dict[str, str], train_edits: list[tuple[int, str, str]]
) -> dict[str, str]:
    """The same edits, applied to any render: the user's model/data, train.py hunks."""
    edited = dict(files)
    edited["model.py"] = (FIXTURES / "tiny_model.py").read_text()
    edited["data.py"] = (FIXTURES / "tiny_data.py").read_text()
    edited["train.py"] = _apply_edits(files["train.py"], train_edits)
    edited["notes.md"] = "my notes\n"
    return edited


def _train_edits(renders: list[dict[str, str]]) -> list[tuple[int, str, str]]:
    """A changed Config field and an inserted comment, where no feature's code is."""
    sites = _edit_sites(renders[0]["train.py"], [r["train.py"] for r in renders])
    fields = [site for site in sites if site[0] == "modify" and " = option(" in site[1]]
    inserts = [site for site in sites if site[0] == "insert"]
    assert fields and inserts, "no line of train.py is free of feature code"
    return [(1, *fields[len(fields) // 2]), (2, *inserts[len(inserts) // 2])]


@pytest.mark.parametrize("features", [("amp",), ("ddp", "slurm")])
def test_add_equals_a_fresh_render_plus_the_edits_and_remove_round_trips(
    tmp_path, features
):
    base, fresh = cached_build(spec()), cached_build(spec(*features))
    train_edits = _train_edits([base, fresh])
    project = new_project(tmp_path)
    write_files(project, _user_edits(base, train_edits))
    edited = tree(project)

    result = invoke("add", *features, "--path", project)
    assert result.exit_code == 0, result.output
    assert project_files(project) == _user_edits(fresh, train_edits)
    assert tree(project / ".scaffold/base") == {p: t.encode() for p, t in fresh.items()}
    answers = json.loads((project / ".scaffold/answers.json").read_text())
    assert answers["features"] == sorted(features, key=feature_names().index)
    assert answers["own_files"] == ["data.py", "model.py"]  # the user replaced them

    result = invoke("remove", *features, "-C", project)
    assert result.exit_code == 0, result.output
    answers_path = ".scaffold/answers.json"
    recorded = json.loads(edited[answers_path])
    edited[answers_path] = answers_text(
        ProjectSpec.from_answers(recorded),
        answers["own_files"],
        templates=installed_source(),
    ).encode()
    assert tree(project) == edited


@pytest.mark.slow
def test_the_generated_tests_pass_after_add(tmp_path):
    base, fresh = cached_build(spec()), cached_build(spec("amp"))
    if "tests/test_train.py" not in fresh:
        pytest.skip("the templates generate no tests/test_train.py yet")
    project = new_project(tmp_path)
    write_files(project, _user_edits(base, _train_edits([base, fresh])))
    assert invoke("add", "amp", "-C", project).exit_code == 0
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_add_and_remove_refuse_unknown_present_and_absent_features(tmp_path):
    project = new_project(tmp_path, None, ["amp"])
    before = tree(project)
    for args, message in [
        (["add", "amp"], "error: the project already has amp\n"),
        (["remove", "clip"], "error: the project does not have clip (it has: amp)\n"),
        (
            ["add", "warp-drive"],
            "error: unknown feature(s): warp-drive (see `scaffold features`)\n",
        ),
    ]:
        result = invoke(*args, "-C", project)
        assert (result.exit_code, result.stderr) == (2, message)
    assert tree(project) == before


# -----------------------------------------------------------------------------
# 3. property: random edits survive random add/remove sequences


# Features whose code is spread over train.py or that bring files of their own; a
# small pool keeps the number of distinct renders (~0.3 s each) low.
POOL = ["ddp", "amp", "accumulate", "slurm", "debug"]


@settings(
    max_examples=15,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_random_edits_survive_random_feature_changes(data):
    names = [name for name in POOL if name in feature_names()]
    start = frozenset(
        data.draw(st.sets(st.sampled_from(names), max_size=3), label="start")
    )
    toggles = data.draw(
        st.lists(st.sampled_from(names), min_size=1, max_size=3), label="toggle"
    )
    sets = [start]
    for name in toggles:
        try:
            sets.append(spec(*(sets[-1] ^ {name})).features)
        except InvalidSpecError:  # a combination the registry forbids
            continue
    renders = [cached_build(spec(*features)) for features in sets]
    edits: dict[str, list[tuple[int, str, str]]] = {}
    number = 0
    for path in sorted(renders[0]):
        if not all(path in r for r in renders):
            continue
        sites = _edit_sites(renders[0][path], [r[path] for r in renders])
        if not sites:
            continue
        chosen = data.draw(
            st.lists(st.sampled_from(sites), max_size=3, unique=True), label=path
        )
        if chosen:
            edits[path] = [
                (number := number + 1, kind, anchor) for kind, anchor in chosen
            ]

    with tempfile.TemporaryDirectory() as tmp:
        project = new_project(Path(tmp), None, sets[0])
        for path, path_edits in edits.items():
            (project / path).write_text(_apply_edits(renders[0][path], path_edits))
        for before, after in itertools.pairwise(sets):
            plan = plan_features(project, add=after - before, remove=before - after)
            assert not plan.conflicts, "\n".join(report_lines(plan))
            execute_plan(plan)
            for path in project.glob("**/*.py"):
                compile(path.read_text(), str(path), "exec")
        expected = {
            path: _apply_edits(text, edits.get(path, [])) if path in edits else text
            for path, text in renders[-1].items()
        }
        assert project_files(project) == expected
        # with nothing new in the templates, update changes nothing, twice
        settled = tree(project)
        for _ in range(2):
            plan = plan_update(project)
            assert plan.is_current and not plan.records
            execute_plan(plan)
            assert tree(project) == settled


# -----------------------------------------------------------------------------
# 4. check, diff, --dry-run, dirty trees, not a project


def test_check_exit_codes(tmp_path, templates, monkeypatch):
    project = new_project(tmp_path, templates.v1)
    use_templates(monkeypatch, templates.v1)
    result = invoke("check", project)
    assert (result.exit_code, result.stdout) == (0, "proj is up to date.\n")

    use_templates(monkeypatch, templates.v2)
    before = tree(project)
    result = invoke("check", project)
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        "removed    .gitignore",
        f"added      {NEW_FILE}",
        "updated    requirements.txt",
        "updated    train.py",
        f"proj is behind: run `scaffold update {project}`.",
    ]
    assert tree(project) == before

    result = invoke("check", tmp_path / "nothing-here")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1


def test_diff_is_what_update_does_and_changes_nothing(tmp_path, templates, monkeypatch):
    project = new_project(tmp_path / "a", templates.v1)
    train = (project / "train.py").read_text()
    (project / "train.py").write_text(replace_line(train, line(train, LR), USER_LR))
    use_templates(monkeypatch, templates.v2)
    before = tree(project)

    result = invoke("diff", project)
    assert result.exit_code == 0
    assert tree(project) == before
    diff = result.stdout
    assert "--- a/train.py\n+++ b/train.py\n" in diff
    assert "--- a/.gitignore\n+++ /dev/null\n" in diff
    assert f"--- /dev/null\n+++ b/{NEW_FILE}\n" in diff
    assert f"-{line(train, SEED)}\n+{V2_SEED}\n" in diff
    assert USER_LR not in diff  # the user's hunk stays as it is

    # applying the diff gives exactly what update gives
    patched = shutil.copytree(project, tmp_path / "patched")
    run = subprocess.run(
        ["patch", "-p1", "--quiet"],
        input=diff,
        text=True,
        cwd=patched,
        capture_output=True,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert invoke("update", project).exit_code == 0
    assert project_files(patched) == project_files(project)
    assert invoke("diff", project).stdout == ""


@pytest.mark.parametrize(
    "args", [["update"], ["add", "amp", "clip", "-C"], ["remove", "ddp", "-C"]]
)
def test_dry_run_writes_nothing_and_reports_what_a_run_does(
    tmp_path, templates, monkeypatch, args
):
    project = new_project(tmp_path / "a", templates.v1, ["ddp"])
    write_files(project, {"model.py": (FIXTURES / "tiny_model.py").read_text()})
    copy = shutil.copytree(project, tmp_path / "b" / NAME)
    use_templates(monkeypatch, templates.v2)
    before = tree(project)

    dry = invoke(*args, project, "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert tree(project) == before
    real = invoke(*args, copy)
    assert real.exit_code == 0, real.output
    assert tree(copy) != before
    assert dry.stdout.splitlines()[:-1] == real.stdout.splitlines()[:-1]
    assert dry.stdout.splitlines()[-1].startswith(
        "Dry run, nothing written; would update proj:"
    )
    assert real.stdout.splitlines()[-1].startswith("Updated proj:")


def _git(project: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        cwd=project,
        check=True,
        capture_output=True,
    )


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_a_dirty_git_tree_is_refused_unless_allowed(tmp_path, templates, monkeypatch):
    project = new_project(tmp_path, templates.v1)
    _git(project, "init", "-q")
    _git(project, "add", "-A")
    _git(project, "commit", "-q", "-m", "v1")
    use_templates(monkeypatch, templates.v2)

    # an uncommitted file the update does not touch is no reason to refuse
    (project / "notes.md").write_text("draft\n")
    plan = plan_update(project)
    execute_plan(plan)  # raises DirtyTreeError if it refused
    _git(project, "add", "-A")
    _git(project, "commit", "-q", "-m", "v2")

    use_templates(monkeypatch, templates.v3)
    train = (project / "train.py").read_text()
    (project / "train.py").write_text(replace_line(train, line(train, LR), USER_LR))
    before = tree(project)
    for args in (["update"], ["add", "amp", "-C"], ["update", "--dry-run"]):
        result = invoke(*args, project)
        assert result.exit_code == 2
        assert result.stderr == (
            f"error: {project} has uncommitted changes in files the update would "
            "touch (train.py); commit them first, or pass --allow-dirty\n"
        )
        assert tree(project) == before
    result = invoke("update", project, "--allow-dirty")
    assert result.exit_code == 0, result.output
    assert USER_LR in (project / "train.py").read_text()


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_in_git_recording_a_resolved_conflict_needs_no_commit_of_the_record(
    tmp_path, templates, monkeypatch
):
    project = new_project(tmp_path, templates.v1)
    train = (project / "train.py").read_text()
    (project / "train.py").write_text(replace_line(train, line(train, SEED), USER_SEED))
    _git(project, "init", "-q")
    _git(project, "add", "-A")
    _git(project, "commit", "-q", "-m", "v1 with my seed")
    use_templates(monkeypatch, templates.v2)
    assert invoke("update", project).exit_code == 1
    text = (project / "train.py").read_text()
    resolved = re.sub(
        r"<<<<<<< yours\n.*?>>>>>>> [^\n]*\n", USER_SEED + "\n", text, flags=re.DOTALL
    )
    (project / "train.py").write_text(resolved)
    _git(project, "add", "train.py")  # the record in .scaffold/ stays uncommitted
    _git(project, "commit", "-q", "-m", "update to v2")
    result = invoke("update", project)
    assert result.exit_code == 0, result.output
    assert not (project / ".scaffold/conflicts").exists()


def test_a_directory_without_a_record_gets_a_one_line_error(tmp_path):
    (tmp_path / "train.py").write_text("print('hi')\n")
    before = tree(tmp_path)
    for args in (
        ["update", tmp_path],
        ["diff", tmp_path],
        ["add", "amp", "-C", tmp_path],
    ):
        result = invoke(*args)
        assert result.exit_code == 2
        assert result.stderr == (
            f"error: {tmp_path} is not a scaffold project (no .scaffold/answers.json); "
            "create one with `scaffold new`\n"
        )
    # the real process: exit status 2, one line on stderr, nothing on stdout
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            "from scaffold.cli import app; app()",
            "check",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (run.returncode, run.stdout) == (2, "")
    assert run.stderr.startswith("error: ") and run.stderr.count("\n") == 1
    assert tree(tmp_path) == before
