"""Format rendered Python with black (in process) and check that it compiles."""

from scaffold.errors import RenderError


def format_python(path: str, source: str) -> str:
    """Return ``source`` formatted by black; RenderError if it is not valid Python."""
    import black  # lazy: black's import costs ~0.1 s

    try:
        return black.format_str(source, mode=black.Mode())
    except black.InvalidInput as exc:
        raise RenderError(f"template produced invalid Python in {path}: {exc}") from exc


def check_compiles(path: str, source: str) -> None:
    """Raise RenderError when ``source`` does not compile."""
    try:
        compile(source, path, "exec")
    except SyntaxError as exc:
        raise RenderError(f"generated {path} does not compile: {exc}") from exc


def finish_files(files: dict[str, str]) -> dict[str, str]:
    """Black-format and compile-check every ``.py`` file; other files pass through."""
    finished = {}
    for path, text in sorted(files.items()):
        if path.endswith(".py"):
            text = format_python(path, text)
            check_compiles(path, text)
        finished[path] = text
    return finished
