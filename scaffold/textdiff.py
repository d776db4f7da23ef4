"""Unified diffs of files and of trees of files, as `git diff` prints them.

``a/PATH`` is the old side and ``b/PATH`` the new one; ``/dev/null`` stands for a
file that is absent on one side. Used by `scaffold diff` (a plan's changes, or
what a template changed in a file that is the user's own) and `scaffold explain`
(what one feature adds).
"""

import difflib

Content = str | bytes | None  # a file's text or bytes; None: no such file


def as_text(data: bytes) -> str | None:
    """``data`` decoded as UTF-8 text, or None for binary content."""
    if b"\0" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _text(data: Content) -> str | None:
    """``data`` as text ("" for no file), or None for binary content."""
    if data is None:
        return ""
    return data if isinstance(data, str) else as_text(data)


def _ensure_newline(line: str) -> str:
    if line.endswith("\n"):
        return line
    return line + "\n\\ No newline at end of file\n"


def file_diff(path: str, before: Content, after: Content) -> str:
    """The unified diff turning ``before`` into ``after`` at ``path`` ("" if equal)."""
    if before == after:
        return ""
    old = f"a/{path}" if before is not None else "/dev/null"
    new = f"b/{path}" if after is not None else "/dev/null"
    old_text, new_text = _text(before), _text(after)
    if old_text is None or new_text is None:
        return f"Binary files {old} and {new} differ\n"
    lines = difflib.unified_diff(
        old_text.splitlines(keepends=True),
        new_text.splitlines(keepends=True),
        fromfile=old,
        tofile=new,
    )
    return "".join(_ensure_newline(line) for line in lines)


def tree_diff(old: dict[str, str], new: dict[str, str]) -> str:
    """The diff from the files ``old`` to the files ``new``, in sorted path order."""
    return "".join(
        file_diff(path, old.get(path), new.get(path))
        for path in sorted(old.keys() | new.keys())
    )
