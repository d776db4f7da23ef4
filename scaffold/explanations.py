"""What each feature is for, where its code lives, and the traps it avoids.

The explanations are Markdown files beside the templates, one per feature:
``templates/templates/<feature>/explanation.md``. `scaffold explain FEATURE` prints
one and `generated_examples/README.md` is generated from them (tools/examples.py).
The tests check them against the renders: every named function exists in the
feature's project, and the options listed are exactly the `Config` fields the
feature adds.

A file has this fixed structure (text may wrap over several lines; a bullet's
continuation lines are indented)::

    # Title

    ## Problem

    One paragraph: what goes wrong or is missing without the feature.

    ## Where

    - `train.py` `setup_distributed`: what happens there
    - `slurm/train.sbatch`: what happens in the whole file

    ## Options

    - `--clip-norm`: what the option of train.py means

    (or the single line ``None.``)

    ## Traps

    - One trap that the generated code avoids, per bullet.

    ## Usage

    ```bash
    python train.py --clip-norm 0.5
    ```

    ## Launch

    ```shell
    sbatch slurm/train.sbatch
    ```

Usage (command lines that run on a CPU in the generated project) and Launch
(ones that need a cluster, several machines or start a server) are optional; each
holds one fenced block, one command per line. A file that does not follow this
raises ExplanationError naming the file and the line.
"""

import re
import textwrap
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from scaffold.errors import ExplanationError, InvalidSpecError
from scaffold.features import FEATURES, FEATURES_BY_NAME

FILE_NAME = "explanation.md"


@dataclass(frozen=True)
class Location:
    """A place in a generated project where a feature's code lives."""

    file: str  # relative path in the project
    name: str | None  # a function or class defined in `file`; None: the whole file
    what: str  # what happens there


@dataclass(frozen=True)
class Explanation:
    """One feature, for a reader who knows PyTorch but not scaffold."""

    title: str
    problem: str  # what goes wrong or is missing without it
    where: tuple[Location, ...]
    options: tuple[tuple[str, str], ...]  # (train.py option it adds, meaning)
    traps: tuple[str, ...]  # correctness traps the generated code avoids
    usage: tuple[str, ...] = ()  # command lines that run on a CPU in the project
    # command lines that need a cluster, several machines or start a server
    launch: tuple[str, ...] = ()


SECTIONS = ("Problem", "Where", "Options", "Traps", "Usage", "Launch")
REQUIRED = ("Problem", "Where", "Options", "Traps")
FENCES = {"Usage": "bash", "Launch": "shell"}
_WHERE = re.compile(r"`([^`]+)`(?: `([^`]+)`)?: (.+)")
_OPTION = re.compile(r"`(--[A-Za-z0-9][A-Za-z0-9-]*)`: (.+)")


def explanation_path(name: str, template_dir: Path | None = None) -> Path:
    """Where the explanation of feature ``name`` lives."""
    from scaffold.render import FEATURES_DIR_NAME, template_root

    return (template_dir or template_root()) / FEATURES_DIR_NAME / name / FILE_NAME


class _Reader:
    """Parses one explanation.md; every error names the file and the line."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.lines = text.splitlines()

    def error(self, number: int, message: str) -> ExplanationError:
        return ExplanationError(f"{self.path}:{number}: {message}")

    def parse(self) -> Explanation:
        title, sections = self._split()
        for name in REQUIRED:
            if name not in sections:
                raise self.error(len(self.lines), f"no '## {name}' section")
        problem = self._paragraph(sections["Problem"])
        where = []
        for number, text in self._bullets(sections["Where"]):
            match = _WHERE.fullmatch(text)
            if match is None:
                raise self.error(number, "expected - `file` `name`: what (or - `file`: what)")
            where.append(Location(match[1], match[2], match[3]))
        options = []
        body = sections["Options"]
        if [line for _, line in body if line.strip()] != ["None."]:
            for number, text in self._bullets(body):
                match = _OPTION.fullmatch(text)
                if match is None:
                    raise self.error(number, "expected - `--option`: meaning (or None.)")
                options.append((match[1], match[2]))
        traps = [text for _, text in self._bullets(sections["Traps"])]
        return Explanation(
            title=title,
            problem=problem,
            where=tuple(where),
            options=tuple(options),
            traps=tuple(traps),
            usage=self._commands(sections, "Usage"),
            launch=self._commands(sections, "Launch"),
        )

    def _split(self) -> tuple[str, dict[str, list[tuple[int, str]]]]:
        """The title and each section's (line number, line) pairs."""
        numbered = list(enumerate(self.lines, start=1))
        content = [(n, line) for n, line in numbered if line.strip()]
        if not content or not content[0][1].startswith("# "):
            raise self.error(content[0][0] if content else 1, "expected '# Title' first")
        title_line = content[0][0]
        title = content[0][1][2:].strip()
        sections: dict[str, list[tuple[int, str]]] = {}
        current: list[tuple[int, str]] | None = None
        in_fence, fence_line = False, 0
        for number, line in numbered[title_line:]:
            if line.startswith("```"):
                in_fence, fence_line = not in_fence, number
            if not in_fence and re.match(r"#{1,6} ", line):
                heading = line[3:].strip() if line.startswith("## ") else None
                if heading not in SECTIONS:
                    known = ", ".join(f"'## {s}'" for s in SECTIONS)
                    raise self.error(number, f"unknown heading {line!r}; use {known}")
                if heading in sections:
                    raise self.error(number, f"a second '## {heading}' section")
                current = sections[heading] = []
                continue
            if current is None:
                if line.strip():
                    raise self.error(number, "text before the first '## ' section")
                continue
            current.append((number, line))
        if in_fence:
            raise self.error(fence_line, "this ``` block is not closed")
        return title, sections

    def _paragraph(self, body: list[tuple[int, str]]) -> str:
        """One paragraph, its lines joined."""
        lines = [(n, line) for n, line in body if line.strip()]
        if not lines:
            raise self.error(body[0][0] if body else len(self.lines), "empty section")
        first, last = lines[0][0], lines[-1][0]
        for number, line in body:
            if first < number < last and not line.strip():
                raise self.error(number, "one paragraph expected (no blank line inside)")
        return " ".join(line.strip() for _, line in lines)

    def _bullets(self, body: list[tuple[int, str]]) -> list[tuple[int, str]]:
        """(line number, text) per ``- `` bullet; indented lines continue one."""
        bullets: list[tuple[int, list[str]]] = []
        for number, line in body:
            if not line.strip():
                continue
            if line.startswith("- "):
                bullets.append((number, [line[2:].strip()]))
            elif line.startswith("  ") and bullets:
                bullets[-1][1].append(line.strip())
            else:
                raise self.error(number, "expected a '- ' bullet (continued by indented lines)")
        if not bullets:
            raise self.error(body[0][0] if body else len(self.lines), "no bullets")
        return [(number, " ".join(parts)) for number, parts in bullets]

    def _commands(self, sections: dict, name: str) -> tuple[str, ...]:
        """The command lines of the section's one fenced block (none if absent)."""
        if name not in sections:
            return ()
        body = [(n, line) for n, line in sections[name] if line.strip()]
        fence = f"```{FENCES[name]}"
        if len(body) < 3 or body[0][1] != fence or body[-1][1] != "```":
            number = body[0][0] if body else len(self.lines)
            raise self.error(number, f"expected one {fence} block, one command a line")
        commands = [line.strip() for _, line in body[1:-1]]
        return tuple(commands)


def read_explanation(path: Path) -> Explanation:
    """Parse one explanation.md; ExplanationError if it is missing or malformed."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ExplanationError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return _Reader(path, text).parse()


@cache
def _load(name: str, template_dir: Path | None) -> Explanation:
    return read_explanation(explanation_path(name, template_dir))


def load_explanations(template_dir: Path | None = None) -> dict[str, Explanation]:
    """Every feature's explanation, in registry order."""
    return {feature.name: _load(feature.name, template_dir) for feature in FEATURES}


def get_explanation(name: str) -> Explanation:
    """The explanation of feature ``name``; InvalidSpecError for an unknown name."""
    if name not in FEATURES_BY_NAME:
        names = ", ".join(feature.name for feature in FEATURES)
        raise InvalidSpecError(f"unknown feature {name!r}; choose one of: {names}")
    return _load(name, None)


def _paragraph(text: str, indent: str = "  ", bullet: str = "") -> str:
    return textwrap.fill(
        text,
        width=88,
        initial_indent=indent + bullet,
        subsequent_indent=indent + " " * len(bullet),
        break_on_hyphens=False,
        break_long_words=False,
    )


def explanation_text(name: str) -> str:
    """The explanation of feature ``name`` as plain text for a terminal."""
    explanation = get_explanation(name)
    feature = FEATURES_BY_NAME[name]
    lines = [
        f"{name}: {explanation.title}",
        f"  {feature.help}",
        f"  scaffold new PATH {feature.flag}   |   scaffold add {name}",
        "",
        "The problem",
        _paragraph(explanation.problem),
        "",
        "Where the code lives",
    ]
    for location in explanation.where:
        place = location.file + (f", {location.name}" if location.name else "")
        lines += [f"  {place}", _paragraph(location.what, indent="      ")]
    lines += ["", "Options it adds to train.py"]
    for flag, meaning in explanation.options:
        lines += [f"  {flag}", _paragraph(meaning, indent="      ")]
    if not explanation.options:
        lines.append("  (none)")
    lines += ["", "Traps it avoids"]
    lines += [_paragraph(trap, bullet="- ") for trap in explanation.traps]
    if explanation.usage:
        lines += ["", "Try it (in the generated project)"]
        lines += [f"  {command}" for command in explanation.usage]
    if explanation.launch:
        lines += ["", "Launch (on a cluster, or a server)"]
        lines += [f"  {command}" for command in explanation.launch]
    return "\n".join(lines) + "\n"
