"""What one feature adds to the base project, as a unified diff.

`scaffold explain FEATURE` shows it: both projects are rendered from the
installed templates under the same name, so the diff holds only the feature's
code. (generated_examples/diffs/ holds the same diffs, written by
tools/examples.py.)
"""

from scaffold.textdiff import tree_diff

PROJECT_NAME = "demo"  # both renders have this name: they differ by features only


def render_example(features: frozenset[str]) -> dict[str, str]:
    """The files of the project named PROJECT_NAME with ``features`` (without
    its `.scaffold/` record)."""
    from scaffold.generate import build_project
    from scaffold.spec import ProjectSpec

    return build_project(ProjectSpec.create(PROJECT_NAME, set(features)))


def feature_diff(name: str) -> str:
    """What feature ``name`` adds to the base project, from the installed templates."""
    base = render_example(frozenset())
    return tree_diff(base, render_example(frozenset({name})))


ANSI = {"+": "\033[32m", "-": "\033[31m", "@": "\033[36m"}
ANSI_BOLD, ANSI_RESET = "\033[1m", "\033[0m"


def colorize_diff(diff: str) -> str:
    """The diff with ANSI colours: additions green, removals red, hunks cyan."""
    out = []
    for line in diff.splitlines(keepends=True):
        body = line.rstrip("\n")
        end = line[len(body) :]
        if line.startswith(("+++ ", "--- ")):
            out.append(f"{ANSI_BOLD}{body}{ANSI_RESET}{end}")
        elif line[:1] in ANSI:
            out.append(f"{ANSI[line[0]]}{body}{ANSI_RESET}{end}")
        else:
            out.append(line)
    return "".join(out)
