"""What each scaffold release brings to a generated project, per feature.

The entries live in ``changelog.json`` beside this module (shipped with the
package): ``{version: [entry, ...]}``, an entry being::

    {"features": ["all"] or feature names,  # the projects it concerns
     "text": "one sentence or two",
     "checkpoints": true,                    # optional: touches checkpoints/resuming
     "contract": "what model.py/data.py must now provide"}  # optional

`scaffold check` and `scaffold update` list the entries after a project's
recorded version for its features; a ``contract`` is said again in one line when
the project's model.py or data.py is the user's own.
"""

import json
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from scaffold.features import FEATURES_BY_NAME
from scaffold.manifest import parse_version

CHANGELOG = Path(__file__).with_name("changelog.json")
ALL = "all"  # an entry for every project, whatever its features
CHECKPOINT_FLAG = "[checkpoints/resume]"


@dataclass(frozen=True)
class Entry:
    """One change a release made to the generated projects."""

    version: str
    text: str
    features: frozenset[str]  # feature names, or {ALL}
    checkpoints: bool = False  # touches checkpoints or resuming
    contract: str = ""  # what the user's model.py/data.py must now provide

    def concerns(self, features: Iterable[str]) -> bool:
        """Whether a project with ``features`` meets this change."""
        return ALL in self.features or not self.features.isdisjoint(features)

    def describe(self) -> str:
        """One line: the version, the text, and the checkpoint flag if any."""
        flag = f" {CHECKPOINT_FLAG}" if self.checkpoints else ""
        return f"{self.version}{flag}: {self.text}"


def _entry(version: str, raw: dict) -> Entry:
    """Validate one raw entry of the changelog file (a bug in it is a bug here)."""
    features = frozenset(raw["features"])
    unknown = features - FEATURES_BY_NAME.keys() - {ALL}
    if unknown or not features:
        raise ValueError(f"changelog {version}: unknown features {sorted(unknown)}")
    extra = raw.keys() - {"features", "text", "checkpoints", "contract"}
    if extra:
        raise ValueError(f"changelog {version}: unknown keys {sorted(extra)}")
    return Entry(
        version=version,
        text=str(raw["text"]),
        features=features,
        checkpoints=bool(raw.get("checkpoints", False)),
        contract=str(raw.get("contract", "")),
    )


@cache
def load(path: Path = CHANGELOG) -> tuple[Entry, ...]:
    """Every entry of the changelog, oldest release first."""
    raw = json.loads(path.read_text(encoding="utf-8"))
    versions = sorted(raw, key=lambda version: parse_version(version) or ())
    return tuple(_entry(v, item) for v in versions for item in raw[v])


def entries_between(old: str, new: str, features: Iterable[str]) -> list[Entry]:
    """The entries after version ``old`` up to ``new`` that concern ``features``.

    An unreadable ``old`` (e.g. ``"unknown"``) counts as older than every release.
    """
    low, high = parse_version(old) or (), parse_version(new) or ()
    chosen = set(features)
    return [
        entry
        for entry in load()
        if low < (parse_version(entry.version) or ()) <= high and entry.concerns(chosen)
    ]
