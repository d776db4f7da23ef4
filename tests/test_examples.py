"""generated_examples/ is current, its diffs do not lie, and `scaffold explain` works.

- the committed renders equal a fresh render (the failure prints the diff and the
  regenerate command), and regenerating a current copy changes no byte;
- applying `diffs/<feature>.diff` to `base/` gives `<feature>/`, for every feature;
- `scaffold explain FEATURE` prints the explanation and the live diff (coloured only
  on a terminal); an unknown feature is a one-line error;
- the explanations name functions and options that exist in the renders.
"""

import ast
import os
import pty
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import config_options
from typer.testing import CliRunner

from scaffold.cli import app
from scaffold.explanations import load_explanations
from scaffold.feature_diff import colorize_diff, feature_diff, render_example
from scaffold.features import feature_names
from scaffold.textdiff import tree_diff
from tools.examples import REGENERATE_COMMAND, check_examples, example_sets, read_tree

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "generated_examples"
FEATURES = feature_names()
ANSI = re.compile(r"\x1b\[[0-9;]*m")
runner = CliRunner()


def truncated(text: str, limit: int = 8000) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n... ({len(text) - limit} more characters)\n"


def text_tree(root: Path) -> dict[str, str]:
    """The project under root without its .scaffold/ record: {path: text}."""
    return {
        path: content.decode("utf-8")
        for path, (content, _) in read_tree(root, skip_record=True).items()
    }


# -----------------------------------------------------------------------------
# a strict unified-diff applier: every context and removed line must match


HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


def _header_path(line: str, marker: str, prefix: str) -> str | None:
    assert line.startswith(marker), f"expected {marker!r}, got {line!r}"
    name = line[len(marker) :].rstrip("\n")
    if name == "/dev/null":
        return None
    assert name.startswith(prefix), f"{name!r} lacks the {prefix!r} prefix"
    return name[len(prefix) :]


def apply_unified_diff(files: dict[str, str], diff: str) -> dict[str, str]:
    """Apply a unified diff (a/ b/ prefixes) to {path: text}; fail on any mismatch."""
    result = dict(files)
    lines = diff.splitlines(keepends=True)
    seen = []
    i = 0
    while i < len(lines):
        old_path = _header_path(lines[i], "--- ", "a/")
        new_path = _header_path(lines[i + 1], "+++ ", "b/")
        i += 2
        path = new_path or old_path
        seen.append(path)
        if old_path is None:
            assert path not in result, f"{path}: added, but exists"
            source = []
        else:
            source = result[old_path].splitlines(keepends=True)
        out, pos = [], 0
        while i < len(lines) and lines[i].startswith("@@"):
            match = HUNK.match(lines[i])
            assert match, f"bad hunk header {lines[i]!r}"
            old_start, old_len = int(match[1]), int(match[2] or 1)
            new_len = int(match[4] or 1)
            i += 1
            body = []  # [tag, text]; read exactly as many lines as the header says
            old_seen = new_seen = 0
            while old_seen < old_len or new_seen < new_len:
                tag, text = lines[i][0], lines[i][1:]
                assert tag in " -+", f"{path}: bad hunk line {lines[i]!r}"
                old_seen += tag in " -"
                new_seen += tag in " +"
                body.append([tag, text])
                i += 1
                # "\ No newline at end of file": the line before has no newline
                if i < len(lines) and lines[i].startswith("\\"):
                    body[-1][1] = text.removesuffix("\n")
                    i += 1
            assert (old_seen, new_seen) == (old_len, new_len), f"{path}: hunk counts"
            start = old_start - 1 if old_len else old_start
            assert start >= pos, f"{path}: hunks out of order"
            out.extend(source[pos:start])
            pos = start
            for tag, text in body:
                if tag in " -":
                    assert pos < len(source) and source[pos] == text, (
                        f"{path}: line {pos + 1} is {source[pos:pos + 1]!r}, "
                        f"the diff expects {text!r}"
                    )
                    pos += 1
                if tag in " +":
                    out.append(text)
        out.extend(source[pos:])
        if old_path is not None:
            del result[old_path]
        if new_path is not None:
            result[new_path] = "".join(out)
        else:
            assert not out, f"{path}: deleted, but lines remain"
    assert seen == sorted(seen), "files are not in sorted order"
    assert len(seen) == len(set(seen)), "a file appears twice"
    return result


def test_the_applier_round_trips_edge_cases():
    old = {
        "kept.txt": "same\n",
        "changed.txt": "one\ntwo\nthree\n",
        "gone.txt": "bye\n",
        "tail.txt": "no newline at the end",
        "lines.txt": "".join(f"line {n}\n" for n in range(40)),
    }
    new = {
        "kept.txt": "same\n",
        "changed.txt": "one\n--- two\nthree\nfour",
        "added.sh": "#!/bin/bash\necho hi\n",
        "tail.txt": "no newline at the end\n",
        "lines.txt": "".join(f"line {n}\n" for n in range(40) if n not in (3, 30)),
    }
    diff = tree_diff(old, new)
    assert "\\ No newline at end of file" in diff
    assert "--- /dev/null\n+++ b/added.sh\n" in diff
    assert "--- a/gone.txt\n+++ /dev/null\n" in diff
    assert diff.count("@@ -") == 6  # lines.txt: two hunks far apart
    assert apply_unified_diff(old, diff) == new
    # and the applier is strict: a diff against other text fails
    with pytest.raises(AssertionError):
        apply_unified_diff({**old, "changed.txt": "one\nTWO\nthree\n"}, diff)


# -----------------------------------------------------------------------------
# generated_examples/ is current and its diffs are exact


def test_generated_examples_are_current():
    report = check_examples(EXAMPLES)
    assert not report, (
        "generated_examples/ is stale (templates or their explanation.md files "
        f"changed). Regenerate it with:\n\n    {REGENERATE_COMMAND}\n\n"
        f"and commit the result. The difference:\n\n{truncated(report)}"
    )


@pytest.mark.parametrize("feature", FEATURES)
def test_applying_a_feature_diff_to_the_base_gives_its_render(feature):
    diff = (EXAMPLES / "diffs" / f"{feature}.diff").read_text(encoding="utf-8")
    assert diff, f"diffs/{feature}.diff is empty: the feature adds nothing"
    patched = apply_unified_diff(text_tree(EXAMPLES / "base"), diff)
    assert patched == text_tree(EXAMPLES / feature)


def test_every_example_directory_records_its_features():
    import json

    for directory, features in example_sets().items():
        record = EXAMPLES / directory / ".scaffold" / "answers.json"
        answers = json.loads(record.read_text())
        assert set(answers["features"]) == features, directory
        assert answers["project_name"] == "demo"


def test_regenerating_a_current_copy_changes_no_byte_and_drops_stale_files(tmp_path):
    copy = shutil.copytree(EXAMPLES, tmp_path / "generated_examples")
    (copy / "stale.txt").write_text("left over\n")
    (copy / "base" / "obsolete.py").write_text("x = 1\n")
    (copy / "diffs" / "gone-feature.diff").write_text("")
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "examples.py"), "--output", str(copy)],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # content and executable bits, as git sees them
    assert read_tree(copy) == read_tree(EXAMPLES), (
        f"regenerating changed generated_examples/; run {REGENERATE_COMMAND}"
    )
    assert not (copy / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["generated_examples"]


def test_check_mode_fails_with_a_diff_and_the_command(tmp_path):
    copy = shutil.copytree(EXAMPLES, tmp_path / "generated_examples")
    train = copy / "amp" / "train.py"
    train.write_text(train.read_text() + "# a hand edit\n")
    (copy / "diffs" / "clip.diff").unlink()
    (copy / "stale.txt").write_text("left over\n")
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "examples.py"), "--check", "--output", str(copy)],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 1
    assert "-# a hand edit" in result.stdout
    assert "missing: generated_examples/diffs/clip.diff" in result.stdout
    assert "stale (no longer generated): generated_examples/stale.txt" in result.stdout
    assert REGENERATE_COMMAND in result.stdout
    assert (copy / "stale.txt").exists()  # --check writes nothing


# -----------------------------------------------------------------------------
# scaffold explain


def words(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize("feature", FEATURES)
def test_explain_prints_the_explanation_and_the_live_diff(feature):
    result = runner.invoke(app, ["explain", feature])
    assert result.exit_code == 0, result.output
    explanation = load_explanations()[feature]
    flat = words(result.stdout)
    assert explanation.title in result.stdout
    assert words(explanation.problem) in flat
    for trap in explanation.traps:
        assert words(trap) in flat
    for flag, _ in explanation.options:
        assert flag in result.stdout
    # the diff of the installed templates, complete and last
    assert result.stdout.endswith(feature_diff(feature))
    assert not ANSI.search(result.stdout)


def test_explain_piped_is_plain_and_matches_the_committed_diff():
    result = subprocess.run(
        [sys.executable, "-m", "scaffold", "explain", "amp"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "\x1b[" not in result.stdout
    assert "Mixed precision" in result.stdout
    committed = (EXAMPLES / "diffs" / "amp.diff").read_text(encoding="utf-8")
    assert result.stdout.endswith(committed)
    assert "+    scaler = torch.amp.GradScaler(" in result.stdout


def test_explain_on_a_terminal_is_coloured():
    master, slave = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "scaffold", "explain", "clip"],
        stdin=subprocess.DEVNULL, stdout=slave, stderr=subprocess.PIPE,
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the terminal's other end is closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    assert process.wait(timeout=120) == 0, process.stderr.read()
    output = b"".join(chunks).decode().replace("\r\n", "\n")
    added = "+        grad_norm = torch.nn.utils.clip_grad_norm_("
    assert "\x1b[32m" + added in output
    assert "\x1b[36m@@ " in output
    assert ANSI.sub("", output).endswith(feature_diff("clip"))


def test_colorize_marks_each_kind_of_line_and_nothing_else():
    diff = feature_diff("amp")
    coloured = colorize_diff(diff)
    assert ANSI.sub("", coloured) == diff
    for line in coloured.splitlines():
        plain = ANSI.sub("", line)
        if plain.startswith(("+++", "---")):
            assert line.startswith("\x1b[1m")
        elif plain.startswith("+"):
            assert line.startswith("\x1b[32m")
        elif plain.startswith("-"):
            assert line.startswith("\x1b[31m")
        elif plain.startswith("@@"):
            assert line.startswith("\x1b[36m")
        else:
            assert line == plain


def test_explain_an_unknown_feature_is_a_one_line_error():
    result = runner.invoke(app, ["explain", "deepspeed"])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.startswith("error: unknown feature 'deepspeed'")
    assert len(result.stderr.strip().splitlines()) == 1
    assert "amp" in result.stderr  # it lists the valid names


# -----------------------------------------------------------------------------
# the explanations are true of the code


def test_every_feature_has_an_explanation():
    assert list(load_explanations()) == FEATURES


def config_fields(train_py: str) -> set[str]:
    module = ast.parse(train_py)
    config = next(
        node for node in module.body
        if isinstance(node, ast.ClassDef) and node.name == "Config"
    )
    return {
        node.target.id for node in config.body
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
    }


@pytest.mark.parametrize("feature", FEATURES)
def test_explanations_name_code_and_options_that_exist(feature):
    explanation = load_explanations()[feature]
    base = render_example(example_sets()["base"])
    files = render_example(example_sets()[feature])
    for location in explanation.where:
        assert location.file in files, f"{location.file} is not in the {feature} render"
        if location.name:
            pattern = rf"^\s*(def|class) {re.escape(location.name)}\b"
            assert re.search(pattern, files[location.file], re.MULTILINE), (
                f"{location.file} of the {feature} render defines no {location.name}"
            )
    added = config_fields(files["train.py"]) - config_fields(base["train.py"])
    flags = {"--" + name.replace("_", "-") for name in added}
    assert {flag for flag, _ in explanation.options} == flags
    # the command lines shown use only options that train.py has
    known = {"--" + name.replace("_", "-") for name in config_fields(files["train.py"])}
    for command in (*explanation.usage, *explanation.launch):
        # arguments after the script (an sbatch script passes them to train.py)
        script = ".sbatch" if ".sbatch" in command else "train.py"
        _, _, script_args = command.partition(script)
        for token in script_args.split():
            if token.startswith("--"):
                assert token in known, f"{command}: train.py has no {token}"


# options of the programs the READMEs launch, besides train.py and scaffold
LAUNCHER_OPTIONS = {
    "--standalone", "--nproc_per_node", "--nnodes", "--node_rank",  # torchrun
    "--rdzv_backend", "--rdzv_endpoint",
    "--nodes", "--signal", "--requeue", "--open-mode", "--time", "--gpus-per-node",  # sbatch
    "--logdir",  # tensorboard
    "--backend-store-uri",  # mlflow ui
    "--no-input",  # cookiecutter
}
SCAFFOLD_OPTIONS = {
    "--yes", "--force", "--dry-run", "--allow-dirty", "--path", "--help", "--version",
    "--continue", "--abort",  # scaffold update
    "--check", "--output",  # python tools/examples.py
    "--venv", "--torch", "--base-python", "--json", "--table",  # tools/compat_matrix.py
}


@pytest.mark.parametrize("readme", ["README.md", "generated_examples/README.md"])
def test_every_option_a_readme_names_exists(readme):
    # with --no-X of each bool; of any example (--activation-checkpointing is not
    # in the largest --fsdp project, which has --compile)
    train_options = {option for features in example_sets().values()
                     for option in config_options(*(render_example(features)[name]
                                                      for name in ("train.py", "train_utils.py")))}
    feature_flags = {"--" + name for name in FEATURES}
    known = train_options | feature_flags | LAUNCHER_OPTIONS | SCAFFOLD_OPTIONS
    named = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9_-]*", (ROOT / readme).read_text()))
    assert named - known == set(), f"{readme} names options that do not exist"
