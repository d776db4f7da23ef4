"""The registry of pieces of Python that the templates render already formatted.

    python -m scaffold.registry           # rewrite templates/formatted-pieces.txt
    python -m scaffold.registry --check   # exit 1 if it is stale

The file lists a digest of every top-level piece (see
scaffold.formatting.split_top_level) of every Python file that the templates
render, for every feature set, with marks for the project's name; each piece
was checked to be what black makes of it. `scaffold new` uses a listed piece as
it is and needs black only for the others. A digest holds for one major version
of black (black's stable style changes only with the major version); for any
other version the registry counts as empty.

Writing it runs black on each piece that is not listed yet: a few seconds after
a small template change, a few minutes from scratch.
"""

import itertools
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path

from scaffold.formatting import black_format, digest, pieces_of

REGISTRY_NAME = "formatted-pieces.txt"
REGENERATE_COMMAND = "python -m scaffold.registry"
HEADER = (
    "# Digests of the top-level pieces of Python that the templates render, for\n"
    "# every feature set, each one checked to be what black leaves unchanged.\n"
    f"# Written by `{REGENERATE_COMMAND}`; tests/test_registry.py keeps it current.\n"
)


@cache
def black_major() -> str:
    """Black's major version: its stable style is fixed within one."""
    from importlib.metadata import version  # lazy: ~15 ms to import

    return version("black").split(".")[0]


def _format_line() -> str:
    return f"black {black_major()}\n"


def read_registry(template_root: Path) -> frozenset[str]:
    """The digests listed for ``template_root``; empty when the file is missing
    or was written for another major version of black."""
    try:
        text = (template_root / REGISTRY_NAME).read_text(encoding="utf-8")
    except OSError:
        return frozenset()
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    if not lines or f"{lines[0]}\n" != _format_line():
        return frozenset()
    return frozenset(lines[1:])


def all_feature_sets() -> list[frozenset[str]]:
    """Every combination of features (2^n), valid or not."""
    from scaffold.features import FEATURES

    names = [feature.name for feature in FEATURES]
    return [
        frozenset(combo)
        for size in range(len(names) + 1)
        for combo in itertools.combinations(names, size)
    ]


def rendered_pieces(template_root: Path | None = None) -> Iterator[tuple[str, str]]:
    """(path, piece) for every distinct piece that some feature set renders."""
    from scaffold.errors import InvalidSpecError
    from scaffold.render import render_project
    from scaffold.spec import ProjectSpec

    seen: set[str] = set()
    for features in all_feature_sets():
        try:
            spec = ProjectSpec.create("registry", features)
        except InvalidSpecError:
            continue  # a combination that scaffold refuses to render
        files = render_project(spec, template_root, name_marks=True)
        for path, text in sorted(files.items()):
            if not path.endswith(".py"):
                continue
            for piece in pieces_of(text):
                if piece not in seen:
                    seen.add(piece)
                    yield path, piece


def registry_text(template_root: Path, trusted: frozenset[str] = frozenset()) -> str:
    """The registry for ``template_root``. Pieces whose digest is in ``trusted``
    are not checked again; black checks every other one. A piece that black
    would change is left out (and reported on stderr)."""
    digests = set()
    for path, piece in rendered_pieces(template_root):
        key = digest(piece)
        if key in trusted or black_format(path, piece) == piece:
            digests.add(key)
        else:
            first_line = piece.splitlines()[0] if piece.strip() else ""
            print(f"not black-clean, left out: {path}: {first_line}", file=sys.stderr)
    return HEADER + _format_line() + "".join(f"{d}\n" for d in sorted(digests))


def main(argv: list[str] | None = None) -> int:
    import argparse

    from scaffold.render import template_root

    parser = argparse.ArgumentParser(
        prog=REGENERATE_COMMAND,
        description=f"Rewrite the templates' {REGISTRY_NAME} (or check it).",
    )
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 when it is stale"
    )
    args = parser.parse_args(argv)
    root = template_root()
    path = root / REGISTRY_NAME
    current = read_registry(root)
    text = registry_text(root, trusted=current)
    old = path.read_text(encoding="utf-8") if path.is_file() else ""
    if args.check:
        if text != old:
            print(f"{path} is stale; rewrite it with: {REGENERATE_COMMAND}")
            return 1
        print(f"{path} is current.")
        return 0
    path.write_text(text, encoding="utf-8")
    print(f"wrote {path} ({len(read_registry(root))} pieces)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
