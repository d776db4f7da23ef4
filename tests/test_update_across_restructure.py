"""`scaffold update` of a project users have today, edited, with the current templates.

tests/fixtures/before_restructure/myproject is a ``--ddp --amp --clip`` project exactly
as scaffold 0.1.0 rendered it before the templates were restructured (train.py as an
outline of named functions, per-feature template folders), its ``.scaffold/`` record
included. It stands for the projects users generated then: never regenerate it (see
the README.md beside it). Whatever the templates are when this test runs, the update
of that project, with a user's typical edits, must lose none of them:

- the user's own model.py and data.py stay exactly theirs;
- the edits to train.py (Config defaults, a new Config field, a line in the loop)
  are all there, merged or inside scaffold's labelled conflict markers in a file
  that the report lists as conflicted, and the file is the 3-way merge of the
  recorded base, the user's file and the new render (no line of either side lost);
- files the user never touched are the new render; the record holds the new base;
- the project trains with the user's model (after resolving any conflict the way a
  user would: the new template's lines, with the user's edits put back in).

The number of conflicts is printed (``pytest -s``), never asserted: it depends on
the templates of the day.
"""

import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

from helpers import FIXTURES, run_train, train_env

from scaffold import __version__
from scaffold.generate import build_project
from scaffold.manifest import ANSWERS_FILE, BASE_DIR, RECORD_DIR, read_manifest
from scaffold.merge import MergeLabels, has_conflict_markers, merge3
from scaffold.update import CONFLICTS_DIR, NEW_SUFFIX, plan_update, report_lines

REPO = Path(__file__).resolve().parent.parent
OWN = ("model.py", "data.py")  # the user's once changed: an update leaves them alone
FIXTURE = FIXTURES / "before_restructure" / "myproject"

USER_MODEL = '''\
"""My model: a small MLP that regresses y on 8 features (it replaced the demo)."""

import torch.nn as nn
import torch.nn.functional as F

N_FEATURES = 8


def build_model(cfg) -> nn.Module:
    return nn.Sequential(
        nn.Linear(N_FEATURES, cfg.hidden_width),
        nn.ReLU(),
        nn.Linear(cfg.hidden_width, 1),
    )


def compute_loss(model, batch):
    x, y = batch
    pred = model(x).squeeze(-1)
    loss = F.mse_loss(pred, y)
    return loss, {"mae": (pred - y).abs().mean().detach()}
'''

USER_DATA = '''\
"""My data: y = x . w + noise, 256/64/64 samples fixed by their own seed."""

import torch
from torch.utils.data import TensorDataset

N_FEATURES = 8
SIZES = [256, 64, 64]


def build_datasets(cfg):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(sum(SIZES), N_FEATURES, generator=generator)
    w = torch.randn(N_FEATURES, generator=generator)
    y = x @ w + 0.1 * torch.randn(sum(SIZES), generator=generator)
    return tuple(
        TensorDataset(xs, ys)
        for xs, ys in zip(x.split(SIZES), y.split(SIZES), strict=True)
    )
'''


@dataclass(frozen=True)
class Edit:
    """An edit of train.py: ``anchor`` (once in the fixture) becomes ``replacement``."""

    name: str
    anchor: str
    replacement: str
    # where a user puts the edit back when the template moved the anchor's code:
    # after the one line that reads like this (the snippet takes its indentation)
    after_line: str | None = None

    def redo(self, text: str) -> str | None:
        """``text`` with this edit made again, or None if its place is not there."""
        if text.count(self.anchor) == 1:
            return text.replace(self.anchor, self.replacement)
        lines = text.splitlines(keepends=True)
        places = [i for i, line in enumerate(lines) if line.strip() == self.after_line]
        if self.after_line is None or len(places) != 1:
            return None
        at = places[0]
        indent = lines[at][: len(lines[at]) - len(lines[at].lstrip())]
        moved = textwrap.indent(textwrap.dedent(self.snippet), indent)
        return "".join(lines[: at + 1]) + moved + "".join(lines[at + 1 :])

    def kept_in(self, text: str) -> bool:
        """Whether ``text`` holds the snippet, at its place or moved (re-indented)."""
        if self.snippet in text:
            return True
        snippet = textwrap.dedent(self.snippet)
        return any(
            textwrap.indent(snippet, " " * n) in text for n in range(0, 33, 4)
        )

    @property
    def snippet(self) -> str:
        """The user's own lines, which the updated project must still hold."""
        kept = set(self.anchor.splitlines(keepends=True))
        lines = self.replacement.splitlines(keepends=True)
        return "".join(line for line in lines if line not in kept)


LOOP_ANCHOR = (
    "                result = compute_loss(model, batch)\n"
    "            loss, metrics = checked_loss(result)\n"
)
COUNTER_ANCHOR = "def fraction_or_count("
EDITS = [
    Edit(
        "lr default",
        '    lr: float = option(3e-3, "peak learning rate (AdamW)")\n',
        '    lr: float = option(1e-2, "peak learning rate (AdamW), for my MLP")\n',
    ),
    Edit(
        "max_epochs default",
        '    max_epochs: int = option(8, "stop after this many epochs")\n',
        '    max_epochs: int = option(20, "stop after this many epochs")\n',
    ),
    Edit(
        "new Config field",
        '    dropout: float = option(0.0, "dropout probability")\n',
        '    dropout: float = option(0.0, "dropout probability")\n'
        '    hidden_width: int = option(64, "hidden units of my MLP (model.py)")\n',
    ),
    Edit(
        "module-level counter",
        COUNTER_ANCHOR,
        "# user: my own bookkeeping of the run\n"
        'USER_COUNTS = {"train_batches": 0}\n'
        "\n"
        "\n" + COUNTER_ANCHOR,
    ),
    Edit(
        "line in the training loop",
        LOOP_ANCHOR,
        LOOP_ANCHOR + "            # user: count the training batches of this process\n"
        '            USER_COUNTS["train_batches"] += 1\n',
        after_line="loss, metrics = checked_loss(result)",
    ),
]

Part = str | tuple[str, str, str]  # text outside conflicts, or (ours, base, theirs)


def _git(project: Path, *args: str) -> None:
    if shutil.which("git") is None:  # the update runs without git too
        return
    subprocess.run(
        ["git", "-c", "user.name=u", "-c", "user.email=u@example.com", *args],
        cwd=project,
        check=True,
        capture_output=True,
    )


def edit_like_a_user(project: Path) -> None:
    """Own model and data, changed defaults, a new field, a line in the loop."""
    (project / "model.py").write_text(USER_MODEL, encoding="utf-8")
    (project / "data.py").write_text(USER_DATA, encoding="utf-8")
    train = project / "train.py"
    text = train.read_text(encoding="utf-8")
    for edit in EDITS:
        found = text.count(edit.anchor)
        assert found == 1, (
            f"edit {edit.name!r}: its anchor is {found} times in the fixture's "
            f"train.py, not once; the fixture must stay as rendered:\n{edit.anchor}"
        )
        text = text.replace(edit.anchor, edit.replacement)
    train.write_text(text, encoding="utf-8")


def split_conflicts(text: str, labels: MergeLabels) -> list[Part]:
    """``text`` cut into outside stretches and (ours, base, theirs) conflict blocks."""
    parts: list[Part] = []
    outside: list[str] = []
    block: tuple[list[str], list[str], list[str]] = ([], [], [])
    side = None  # None: outside; 0, 1, 2: inside ours, base, theirs
    for line in text.splitlines(keepends=True):
        if side is None and line == f"<<<<<<< {labels.ours}\n":
            parts.append("".join(outside))
            outside, block, side = [], ([], [], []), 0
        elif side == 0 and line == f"||||||| {labels.base}\n":
            side = 1
        elif side == 1 and line == "=======\n":
            side = 2
        elif side == 2 and line == f">>>>>>> {labels.theirs}\n":
            parts.append(tuple("".join(lines) for lines in block))
            side = None
        elif side is None:
            outside.append(line)
        else:
            block[side].append(line)
    assert side is None, "a conflict block is not closed"
    parts.append("".join(outside))
    rest = "".join(part for part in parts if isinstance(part, str))
    assert not has_conflict_markers(rest), "conflict markers without scaffold's labels"
    return parts


def view(parts: list[Part], side: int) -> str:
    """The text with each conflict block replaced by one of its sides."""
    return "".join(part if isinstance(part, str) else part[side] for part in parts)


def resolve(parts: list[Part]) -> str:
    """Resolve every block as a user would: the new lines, with their edits put back.

    A block holding none of the edits takes the template's side; two insertions at
    one place (an empty base) keep both, the user's first. Otherwise each edit the
    block holds is redone on the template's side at its anchor, or where the code
    of its anchor went (Edit.redo); where neither is there, the block keeps the
    user's side.
    """
    chosen, pending = [], []  # pending: (index in chosen, its ours, its edits)
    for part in parts:
        if isinstance(part, str):
            chosen.append(part)
            continue
        ours, base, theirs = part
        mine = [edit for edit in EDITS if edit.kept_in(ours)]
        if mine and not base:
            chosen.append(ours + theirs)
            continue
        text = theirs
        for edit in mine:
            if not edit.kept_in(text):
                redone = edit.redo(text)
                if redone is None:  # its place is elsewhere in the file, or gone
                    pending.append((len(chosen), ours, edit))
                    continue
                text = redone
        chosen.append(text)
    resolved = "".join(chosen)
    for index, ours, edit in pending:
        if edit.redo(resolved) is None:  # nowhere to put it back: keep the user's side
            chosen[index] = ours
    resolved = "".join(chosen)
    for _, _, edit in pending:
        if not edit.kept_in(resolved):
            resolved = edit.redo(resolved)
    return resolved


def project_tree(project: Path) -> dict[str, str]:
    """Every file of the project but git's: {relative path: text}."""
    return {
        path.relative_to(project).as_posix(): path.read_text(encoding="utf-8")
        for path in sorted(project.rglob("*"))
        if path.is_file() and ".git" not in path.relative_to(project).parts[:1]
    }


def test_an_edited_project_of_scaffold_0_1_0_updates_and_keeps_every_edit(tmp_path):
    project = tmp_path / FIXTURE.name
    shutil.copytree(FIXTURE, project)
    old = read_manifest(project)
    _git(project, "init", "-q")
    _git(project, "add", "-A")
    _git(project, "commit", "-q", "-m", "generated by scaffold 0.1.0")
    edit_like_a_user(project)
    _git(project, "commit", "-q", "-am", "my model, data and options")
    ours = project_tree(project)

    run = subprocess.run(
        [sys.executable, "-m", "scaffold", "update", str(project)],
        cwd=REPO,  # this checkout's scaffold and templates
        capture_output=True,
        text=True,
        timeout=120,
        env=train_env(),
        check=False,
    )
    report = run.stdout.splitlines()
    listed = {  # "conflict   train.py: 2 conflicting change(s) ..."
        line.split(None, 1)[1].split(":")[0]
        for line in report
        if line.split(None, 1)[:1] in (["conflict"], ["unresolved"])
    }

    # What the update must have written: the 3-way merge of the recorded base, the
    # user's file and the current render (for an untouched file: the render).
    rendered = build_project(old.spec)
    labels = MergeLabels(
        ours="yours",
        base=f"base (scaffold {old.tool_version})",
        theirs=f"scaffold {__version__} (new template)",
    )
    expected: dict[str, str | None] = {}
    conflicts: dict[str, int] = {}
    for path in sorted(old.base.keys() | rendered.keys()):
        base, mine, new = old.base.get(path), ours.get(path), rendered.get(path)
        if path in OWN and mine != base:
            expected[path] = mine  # the user's own: left alone, whatever the demo did
        elif base is None:
            expected[path] = new  # a new template file
        elif new is None:
            expected[path] = None if mine == base else mine  # kept when edited
        else:
            merged = merge3(base, mine, new, labels)
            expected[path] = merged.text
            if merged.has_conflicts:
                conflicts[path] = merged.conflicts
    beside = {path for path in listed if f"{path}{NEW_SUFFIX}" in run.stdout}
    summary = (
        f"scaffold update of the 0.1.0 fixture left {sum(conflicts.values())} "
        f"conflict(s) in {sorted(conflicts) or 'no file'}; exit {run.returncode}\n"
        f"--- report\n{run.stdout}--- stderr\n{run.stderr}"
    )
    print(summary)
    assert run.returncode == (1 if conflicts or beside else 0), summary
    assert listed == set(conflicts) | beside, summary

    after = project_tree(project)
    for path in OWN:
        assert after.get(path) == ours[path], (
            f"the update changed the user's {path}\n{summary}"
        )
    for path, text in rendered.items():
        if path in old.base and ours.get(path) == old.base[path]:
            assert after.get(path) == text, f"untouched {path} is not the new render"
    for path, text in expected.items():
        if path not in beside:
            assert after.get(path) == text, f"{path} is not the 3-way merge\n{summary}"

    # No edit lost silently, seen without the merge code: every line only one
    # side has is on that side of the result, every snippet on the user's side,
    # and no line that both sides dropped comes back.
    for path in sorted(set(conflicts) | {"train.py"}):
        base, mine, new = old.base[path], ours[path], rendered[path]
        parts = split_conflicts(after[path], labels)
        blocks = sum(not isinstance(part, str) for part in parts)
        assert blocks == conflicts.get(path, 0), f"{path}: {blocks} conflict blocks"
        yours = set(view(parts, 0).splitlines())
        theirs = set(view(parts, 2).splitlines())
        base_lines = set(base.splitlines())
        for line in set(mine.splitlines()) - base_lines:
            assert line in yours, f"{path}: user's line lost: {line!r}"
        for line in set(new.splitlines()) - base_lines:
            assert line in theirs, f"{path}: template's line lost: {line!r}"
        kept = set(mine.splitlines()) | set(new.splitlines())
        outside = "".join(part for part in parts if isinstance(part, str))
        invented = set(outside.splitlines()) - kept
        assert not invented, f"{path}: lines in neither the user's nor the new file"
    for edit in EDITS:
        assert edit.snippet in view(split_conflicts(after["train.py"], labels), 0), (
            f"edit {edit.name!r} is lost\n{summary}"
        )

    # Nothing else: no .scaffold-new the report does not name, no half-written file.
    record = {f"{RECORD_DIR}/{ANSWERS_FILE}"}
    record |= {f"{RECORD_DIR}/{BASE_DIR}/{path}" for path in expected}
    record |= {f"{RECORD_DIR}/{CONFLICTS_DIR}/{path}" for path in listed}
    files = {path for path, text in expected.items() if text is not None}
    files |= {f"{path}{NEW_SUFFIX}" for path in beside}
    extra = set(after) - files - record
    assert not extra, f"files the update should not have left: {sorted(extra)}"
    assert files <= set(after)

    # The record: the new render is the base, except where a conflict waits.
    new = read_manifest(project)
    assert new.spec == old.spec
    waiting = set(conflicts) | beside
    own = {path for path in OWN if ours[path] != old.base[path]}
    assert new.own_files == own
    base = {path: text for path, text in rendered.items() if path not in waiting}
    base |= {path: old.base[path] for path in waiting | own}
    base |= {  # no longer generated but edited: kept, with its old base
        path: text
        for path, text in old.base.items()
        if path not in rendered and expected[path] is not None
    }
    assert new.base == base
    for path in waiting:
        pending = project / RECORD_DIR / CONFLICTS_DIR / path
        assert pending.read_text(encoding="utf-8") == rendered[path], path
    if new.base != old.base:
        assert new.tool_version == __version__

    # Resolve train.py as a user would, then train with the user's model.
    assert not (waiting - {"train.py"}), f"conflicts outside train.py\n{summary}"
    if "train.py" in conflicts:
        resolved = resolve(split_conflicts(after["train.py"], labels))
        assert not has_conflict_markers(resolved)
        for edit in EDITS:
            assert edit.kept_in(resolved), f"resolving lost {edit.name!r}"
        (project / "train.py").write_text(resolved, encoding="utf-8")
    run_train(project, "--device", "cpu", "--fast-dev-run", tiny_defaults=False)
    run_train(project, "--device", "cpu", "--max-steps", "3", tiny_defaults=False)

    # Updated (and resolved): the next update has nothing left to do.
    again = plan_update(project)
    assert not again.conflicts and not again.writes, report_lines(again)
