"""The errors scaffold raises on purpose.

Every error a user can cause is a ``ScaffoldError`` subclass whose message is one
line saying what went wrong and what to do. The CLI maps them to exit codes in one
place (``scaffold.cli``); anything else is a bug and shows a traceback.
"""


class ScaffoldError(Exception):
    """Raised for any problem the user can fix; the message is shown as is."""

    exit_code = 2


class InvalidSpecError(ScaffoldError):
    """Raised when a project name or feature set cannot be generated."""


class InvalidOptionsError(ScaffoldError):
    """Raised when a command's options cannot be used together."""


class TargetError(ScaffoldError):
    """Raised when the target directory cannot receive a new project."""


class RenderError(ScaffoldError):
    """Raised when the templates produce a file that is not valid Python."""


class ExplanationError(ScaffoldError):
    """Raised when a feature's explanation.md is missing or malformed."""


class ProjectError(ScaffoldError):
    """Raised when a directory is not a scaffold project or its record is damaged."""


class DirtyTreeError(ScaffoldError):
    """Raised when update would touch a git work tree with uncommitted changes."""


class MergeConflictError(ScaffoldError):
    """Raised after an update that left conflict markers in some files."""

    exit_code = 1
