"""The templates' registry of formatted pieces is current.

It must list every piece that some feature set renders (or `scaffold new` would
run black, slowly) and nothing else; that each listed piece is what black makes
of it is checked by tests/test_render_matrix.py, which runs black on them all.
"""

from scaffold.formatting import digest
from scaffold.registry import (
    REGENERATE_COMMAND,
    REGISTRY_NAME,
    read_registry,
    rendered_pieces,
)
from scaffold.render import template_root


def test_the_registry_lists_exactly_the_pieces_the_templates_render():
    root = template_root()
    listed = read_registry(root)
    rendered = {digest(piece): (path, piece) for path, piece in rendered_pieces(root)}
    missing = [
        f"{path}: {piece.splitlines()[0]}"
        for key, (path, piece) in sorted(rendered.items())
        if key not in listed
    ]
    unused = sorted(listed - rendered.keys())
    assert not missing and not unused, (
        f"{REGISTRY_NAME} is stale ({len(missing)} pieces missing, e.g. {missing[:3]}; "
        f"{len(unused)} unused); rewrite it with: {REGENERATE_COMMAND}"
    )
