"""Line-based three-way merge (diff3) of a base text and two changed versions.

``merge3(base, ours, theirs)`` keeps every change either side made to ``base``.
Where both sides changed the same lines differently, or inserted different lines
at the same place, the result holds both versions between labelled conflict
markers, as git does with ``merge.conflictStyle=diff3``::

    <<<<<<< yours
    seed: int = 42
    ||||||| base
    seed: int = 1337
    =======
    seed: int = 0
    >>>>>>> scaffold 0.2.0 (new template)

The algorithm: match base against each side (``difflib.SequenceMatcher`` without
its autojunk heuristic, which would misalign the many blank and bracket lines of
formatted code), keep the base lines that both sides kept ("sync" runs), and
decide each stretch between two sync runs on its own. A stretch both sides
changed is looked at once more, hunk by hunk: changes that merely touch (a line
the user edited right next to a block the template removes or adds) do not
overlap, so they merge; only overlapping hunks conflict. That matters here more
than in git, because adding or removing a feature inserts or deletes whole blocks
right next to lines users edit, and a deleted block can often be aligned in
several equally short ways, one of them touching the user's line.
"""

import re
from collections.abc import Iterator
from dataclasses import dataclass
from difflib import SequenceMatcher

# A line that starts or ends a conflict region written by merge3 (any labels).
_MARKER_LINE = re.compile(r"^(<{7}|>{7}) ", re.MULTILINE)


@dataclass(frozen=True)
class MergeLabels:
    """The words written after the conflict markers."""

    ours: str = "yours"
    base: str = "base"
    theirs: str = "theirs"


@dataclass(frozen=True)
class MergeResult:
    """The merged text and how many conflict regions it contains."""

    text: str
    conflicts: int

    @property
    def has_conflicts(self) -> bool:
        """Whether the text contains conflict markers the user must resolve."""
        return self.conflicts > 0


def has_conflict_markers(text: str) -> bool:
    """Whether ``text`` still holds a ``<<<<<<<`` or ``>>>>>>>`` marker line."""
    return _MARKER_LINE.search(text) is not None


def _sync_runs(
    base: list[str], ours: list[str], theirs: list[str]
) -> Iterator[tuple[int, int, int, int]]:
    """Runs of base lines kept by both sides: (base start, base end, ours start, theirs start).

    Ends with an empty run at the end of all three texts, so that the stretch
    after the last real run is handled like every other.
    """
    to_ours = SequenceMatcher(None, base, ours, autojunk=False).get_matching_blocks()
    to_theirs = SequenceMatcher(
        None, base, theirs, autojunk=False
    ).get_matching_blocks()
    i = j = 0
    while i < len(to_ours) and j < len(to_theirs):
        base_o, ours_start, size_o = to_ours[i]
        base_t, theirs_start, size_t = to_theirs[j]
        start = max(base_o, base_t)
        end = min(base_o + size_o, base_t + size_t)
        if start < end:
            yield start, end, ours_start + start - base_o, theirs_start + start - base_t
        # advance the block that ends first; the other may overlap the next one
        if base_o + size_o < base_t + size_t:
            i += 1
        else:
            j += 1
    yield len(base), len(base), len(ours), len(theirs)


def _lines(text: str) -> list[str]:
    """Split at ``\\n`` only, keeping each line's ending (``\\r\\n`` stays whole)."""
    parts = text.split("\n")
    lines = [part + "\n" for part in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    return lines


def _terminated(lines: list[str]) -> list[str]:
    """``lines`` with a newline after the last one, so a marker can follow it."""
    if lines and not lines[-1].endswith("\n"):
        return [*lines[:-1], lines[-1] + "\n"]
    return lines


Hunk = tuple[int, int, tuple[str, ...]]  # base lines [start, end) -> new lines


def _hunks(base: list[str], side: list[str]) -> list[Hunk]:
    """The changes that turn ``base`` into ``side``, in base order."""
    opcodes = SequenceMatcher(None, base, side, autojunk=False).get_opcodes()
    return [
        (i1, i2, tuple(side[j1:j2]))
        for tag, i1, i2, j1, j2 in opcodes
        if tag != "equal"
    ]


def _overlap(a: Hunk, b: Hunk) -> bool:
    """Whether two hunks of different sides cannot both apply in a defined order."""
    (a1, a2, _), (b1, b2, _) = a, b
    if a1 == a2 and b1 == b2:  # two insertions: the same place has no order
        return a1 == b1
    if a1 == a2:  # an insertion inside the other's range
        return b1 < a1 < b2
    if b1 == b2:
        return a1 < b1 < a2
    return a1 < b2 and b1 < a2


def _merge_hunks(old: list[str], mine: list[str], new: list[str]) -> list[str] | None:
    """Apply both sides' hunks to ``old`` when none overlap; None otherwise."""
    ours, theirs = _hunks(old, mine), _hunks(old, new)
    both = [hunk for hunk in ours if hunk in theirs]  # the same change, taken once
    ours = [hunk for hunk in ours if hunk not in both]
    theirs = [hunk for hunk in theirs if hunk not in both]
    if any(_overlap(a, b) for a in ours for b in theirs):
        return None
    merged: list[str] = []
    position = 0
    for start, end, lines in sorted(both + ours + theirs, key=lambda h: h[:2]):
        merged.extend(old[position:start])
        merged.extend(lines)
        position = end
    merged.extend(old[position:])
    return merged


def merge3(
    base: str, ours: str, theirs: str, labels: MergeLabels = MergeLabels()
) -> MergeResult:
    """Merge the changes ``ours`` and ``theirs`` made to ``base``, line by line.

    A stretch changed by one side only takes that side's lines; a stretch both
    sides changed identically is taken once; a stretch both changed in different
    places takes both changes; any other stretch becomes a conflict region showing
    ours, base and theirs. Lines keep their own line endings.
    """
    base_lines = _lines(base)
    ours_lines = _lines(ours)
    theirs_lines = _lines(theirs)
    merged: list[str] = []
    conflicts = 0
    b = o = t = 0
    for base_start, base_end, ours_start, theirs_start in _sync_runs(
        base_lines, ours_lines, theirs_lines
    ):
        old = base_lines[b:base_start]
        mine = ours_lines[o:ours_start]
        new = theirs_lines[t:theirs_start]
        if mine == old or mine == new:
            merged.extend(new)
        elif new == old:
            merged.extend(mine)
        elif (both := _merge_hunks(old, mine, new)) is not None:
            merged.extend(both)
        else:
            conflicts += 1
            merged.append(f"<<<<<<< {labels.ours}\n")
            merged.extend(_terminated(mine))
            merged.append(f"||||||| {labels.base}\n")
            merged.extend(_terminated(old))
            merged.append("=======\n")
            merged.extend(_terminated(new))
            merged.append(f">>>>>>> {labels.theirs}\n")
        merged.extend(base_lines[base_start:base_end])
        size = base_end - base_start
        b, o, t = base_end, ours_start + size, theirs_start + size
    return MergeResult("".join(merged), conflicts)
