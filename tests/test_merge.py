"""Unit tests of the line-based three-way merge (scaffold.merge.merge3)."""

import pytest

from scaffold.merge import MergeLabels, has_conflict_markers, merge3

BASE = "a\nb\nc\nd\ne\n"


def conflict(
    ours: str, base: str, theirs: str, labels: MergeLabels | None = None
) -> str:
    """The exact conflict region merge3 writes for one overlapping change."""
    labels = labels or MergeLabels()
    return (
        f"<<<<<<< {labels.ours}\n{ours}||||||| {labels.base}\n{base}"
        f"=======\n{theirs}>>>>>>> {labels.theirs}\n"
    )


def test_unchanged_sides_give_the_base():
    assert merge3(BASE, BASE, BASE).text == BASE
    assert not merge3(BASE, BASE, BASE).has_conflicts


def test_one_side_changed_takes_that_side():
    changed = "a\nB\nc\nd\ne\n"
    assert merge3(BASE, changed, BASE).text == changed
    assert merge3(BASE, BASE, changed).text == changed


def test_changes_in_different_places_are_both_kept():
    ours = "a\nB\nc\nd\ne\n"
    theirs = "a\nb\nc\nd\nE\n"
    result = merge3(BASE, ours, theirs)
    assert result.text == "a\nB\nc\nd\nE\n"
    assert result.conflicts == 0


def test_identical_changes_on_both_sides_merge_once():
    changed = "a\nB\nc\nX\nd\ne\n"
    result = merge3(BASE, changed, changed)
    assert result.text == changed
    assert not result.has_conflicts


def test_different_changes_to_the_same_line_conflict_with_labels():
    labels = MergeLabels("yours", "base", "scaffold 9.9 (new template)")
    result = merge3(BASE, "a\nb\nOURS\nd\ne\n", "a\nb\nTHEIRS\nd\ne\n", labels)
    assert result.conflicts == 1
    assert (
        result.text
        == "a\nb\n" + conflict("OURS\n", "c\n", "THEIRS\n", labels) + "d\ne\n"
    )
    assert has_conflict_markers(result.text)


def test_insertions_at_the_same_place_conflict_unless_equal():
    ours = "a\nb\nX\nc\nd\ne\n"
    theirs = "a\nb\nY\nc\nd\ne\n"
    result = merge3(BASE, ours, theirs)
    assert result.text == "a\nb\n" + conflict("X\n", "", "Y\n") + "c\nd\ne\n"
    assert merge3(BASE, ours, ours).text == ours


def test_insertions_at_different_places_are_both_kept():
    result = merge3(BASE, "X\na\nb\nc\nd\ne\n", "a\nb\nc\nd\ne\nY\n")
    assert result.text == "X\na\nb\nc\nd\ne\nY\n"
    assert not result.has_conflicts


def test_deletion_on_one_side_and_edit_elsewhere():
    result = merge3(BASE, "a\nc\nd\ne\n", "a\nb\nc\nd\nE\n")
    assert result.text == "a\nc\nd\nE\n"
    assert not result.has_conflicts


def test_deletion_against_an_edit_of_the_same_lines_conflicts():
    # e.g. `scaffold remove amp` deleting a block the user edited: the edit survives
    base = "keep\nblock 1\nblock 2\nend\n"
    ours = "keep\nblock 1 (edited)\nblock 2\nend\n"
    theirs = "keep\nend\n"
    result = merge3(base, ours, theirs)
    assert result.text == (
        "keep\n"
        + conflict("block 1 (edited)\nblock 2\n", "block 1\nblock 2\n", "")
        + "end\n"
    )


def test_both_deleting_the_same_lines():
    result = merge3(BASE, "a\nd\ne\n", "a\nd\ne\n")
    assert result.text == "a\nd\ne\n"
    assert not result.has_conflicts


def test_changes_to_neighbouring_lines_both_apply():
    result = merge3(BASE, "a\nB\nc\nd\ne\n", "a\nb\nC\nd\ne\n")
    assert result.text == "a\nB\nC\nd\ne\n"
    assert not result.has_conflicts


def test_edit_next_to_a_removed_block_merges_however_the_deletion_aligns():
    # theirs removes a fenced block; the longest match aligns the deletion to
    # start at the first closing fence, right after the line the user edited
    base = "help\n```\n\nslurm:\n```\nsbatch x\n```\n\nA1\nA2\nA3\n"
    ours = base.replace("help\n", "help  # mine\n")
    theirs = "help\n```\n\nA1\nA2\nA3\n"
    result = merge3(base, ours, theirs)
    assert result.text == "help  # mine\n```\n\nA1\nA2\nA3\n"
    assert not result.has_conflicts


def test_insertion_next_to_a_changed_range_merges_inside_it_conflicts():
    base = "a\nb\nc\nd\n"
    # the user inserts a line before a block the template deletes: both happen
    assert merge3(base, "a\nnote\nb\nc\nd\n", "a\nd\n").text == "a\nnote\nd\n"
    # an insertion inside the deleted block has nowhere to go: conflict
    result = merge3(base, "a\nb\nnote\nc\nd\n", "a\nd\n")
    assert result.text == "a\n" + conflict("b\nnote\nc\n", "b\nc\n", "") + "d\n"


@pytest.mark.parametrize(
    "base, ours, theirs, expected",
    [
        ("", "", "", ""),
        ("", "x\n", "", "x\n"),
        ("", "", "y\n", "y\n"),
        ("a\n", "", "a\n", ""),
        ("a\n", "a\n", "", ""),
        ("", "same\n", "same\n", "same\n"),
    ],
)
def test_empty_files(base, ours, theirs, expected):
    result = merge3(base, ours, theirs)
    assert result.text == expected
    assert not result.has_conflicts


def test_empty_base_with_two_different_files_is_one_conflict():
    result = merge3("", "x\n", "y\n")
    assert result.text == conflict("x\n", "", "y\n")


def test_missing_trailing_newline_is_preserved_when_clean():
    result = merge3("a\nb\nc", "A\nb\nc", "a\nb\nc")
    assert result.text == "A\nb\nc"
    result = merge3("a\nb\nc", "A\nb\nc", "a\nb\nC")
    assert result.text == "A\nb\nC"


def test_trailing_newline_added_by_one_side():
    assert merge3("a\nb\nc", "A\nb\nc", "a\nb\nc\n").text == "A\nb\nc\n"
    assert merge3("a\nb\nc", "a\nb\nc\n", "A\nb\nc").text == "A\nb\nc\n"


def test_conflict_on_last_line_without_newline_keeps_markers_on_their_own_lines():
    result = merge3("a\nb", "a\nX", "a\nY")
    assert result.text == "a\n" + conflict("X\n", "b\n", "Y\n")


def test_crlf_lines_keep_their_endings():
    result = merge3("a\r\nb\r\nc\r\n", "A\r\nb\r\nc\r\n", "a\r\nb\r\nC\r\n")
    assert result.text == "A\r\nb\r\nC\r\n"


def test_repeated_lines_are_aligned_without_autojunk():
    # formatted code repeats blank and bracket lines; each edit must land in place
    block = "def f():\n    return (\n        1\n    )\n\n"
    base = block * 150
    ours = base.replace("        1\n", "        1  # mine\n", 1)
    theirs_lines = base.split("\n")
    theirs_lines[-4] = "        2"  # the last `1`
    theirs = "\n".join(theirs_lines)
    result = merge3(base, ours, theirs)
    assert not result.has_conflicts
    assert result.text.count("# mine") == 1
    assert result.text.startswith("def f():\n    return (\n        1  # mine\n")
    assert result.text.endswith("    return (\n        2\n    )\n\n")


def test_marker_detection_ignores_look_alikes():
    assert not has_conflict_markers("x = '<<<<<<<'\n# ======= section\n")
    assert has_conflict_markers("ok\n>>>>>>> scaffold 0.1.0 (new template)\n")
