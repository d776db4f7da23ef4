"""ProjectSpec: the validated, frozen answers that fully determine a render."""

import keyword
import re
import shlex
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scaffold.errors import InvalidSpecError
from scaffold.features import FEATURES, FEATURES_BY_NAME

# The project name is also its directory's name: most file systems (ext4, xfs,
# APFS, NTFS) allow at most 255 bytes in one name.
MAX_NAME_BYTES = 255


def slugify(name: str) -> str:
    """The Python-module form of a project name: lower case, `_` for `-` and spaces."""
    return re.sub(r"[\s\-]+", "_", name.strip()).lower()


def check_project_name(name: str) -> str:
    """Return the slug of ``name`` or raise InvalidSpecError saying why it is unusable."""
    if not name or not name.strip():
        raise InvalidSpecError("the project name is empty")
    if name in {".", ".."} or "/" in name or "\\" in name:
        raise InvalidSpecError(
            f"project name {name!r} must be a single directory name, not a path"
        )
    if len(name.encode()) > MAX_NAME_BYTES:
        raise InvalidSpecError(
            f"project name is {len(name.encode())} bytes long; a directory name "
            f"holds at most {MAX_NAME_BYTES}"
        )
    slug = slugify(name)
    if not slug.isidentifier() or not slug.isascii():
        raise InvalidSpecError(
            f"project name {name!r} gives {slug!r}, which is not a Python module name "
            "(letters, digits and _ only, not starting with a digit)"
        )
    if keyword.iskeyword(slug):
        raise InvalidSpecError(f"project name {name!r} is a Python keyword")
    return slug


def _normalize(name: str) -> str:
    """A feature name as typed, in the registry's spelling."""
    return name.strip().lower().replace("_", "-")


@dataclass(frozen=True)
class ProjectSpec:
    """What to generate: the project's name and the chosen features."""

    name: str
    features: frozenset[str] = frozenset()

    @classmethod
    def create(cls, name: str, features: set[str] | frozenset[str] = frozenset()):
        """Validate a name and feature set (unknown names, conflicts)."""
        check_project_name(name)
        unknown = sorted(set(features) - FEATURES_BY_NAME.keys())
        if unknown:
            raise InvalidSpecError(
                f"unknown feature(s): {', '.join(unknown)} "
                "(see `scaffold features`)"
            )
        for feature_name in sorted(features):
            feature = FEATURES_BY_NAME[feature_name]
            clashing = [c for c in feature.conflicts if c in features]
            if clashing:
                reason = f": {feature.why_conflicts}" if feature.why_conflicts else ""
                raise InvalidSpecError(
                    f"feature {feature_name} conflicts with {', '.join(clashing)}"
                    + reason
                )
        return cls(name=name, features=frozenset(features))

    @property
    def slug(self) -> str:
        """The project's module-safe name."""
        return slugify(self.name)

    def with_features(self, features: set[str] | frozenset[str]) -> "ProjectSpec":
        """A validated copy with another feature set (for add/remove)."""
        return ProjectSpec.create(self.name, features)

    def with_changes(
        self, add: Iterable[str] = (), remove: Iterable[str] = ()
    ) -> "ProjectSpec":
        """A validated copy that adds and removes features (names as typed by users:
        `early_stopping` and `Early-Stopping` are `early-stopping`)."""
        adding = [_normalize(name) for name in add]
        removing = [_normalize(name) for name in remove]
        present = sorted(name for name in adding if name in self.features)
        if present:
            raise InvalidSpecError(f"the project already has {', '.join(present)}")
        absent = sorted(
            name
            for name in removing
            if name not in self.features and name not in adding
        )
        if absent:
            have = ", ".join(self.sorted_features()) or "none"
            raise InvalidSpecError(
                f"the project does not have {', '.join(absent)} (it has: {have})"
            )
        return self.with_features((set(self.features) | set(adding)) - set(removing))

    def sorted_features(self) -> list[str]:
        """Chosen features in registry order (stable output everywhere)."""
        return [f.name for f in FEATURES if f.name in self.features]

    def cookiecutter_context(self) -> dict[str, str]:
        """The answers as cookiecutter variables: ``"y"``/``"n"`` per feature."""
        context = {"project_name": self.name, "project_slug": self.slug}
        for feature in FEATURES:
            context[feature.key] = "y" if feature.name in self.features else "n"
        return context

    def command_line(self, path: Path | str | None = None) -> str:
        """The `scaffold new` command that reproduces this spec, quoted for a shell."""
        target = str(path) if path is not None else self.name
        flags = [f"--{name}" for name in self.sorted_features()]
        return shlex.join(["scaffold", "new", target, *flags])

    def to_answers(self) -> dict[str, Any]:
        """The answers as recorded in a project's `.scaffold/answers.json`."""
        return {"project_name": self.name, "features": self.sorted_features()}

    @classmethod
    def from_answers(cls, answers: dict[str, Any]) -> "ProjectSpec":
        """Rebuild a spec from recorded answers, validating them again."""
        try:
            name = answers["project_name"]
            features = set(answers["features"])
        except (KeyError, TypeError) as exc:
            raise InvalidSpecError(f"recorded answers are incomplete: {exc}") from exc
        return cls.create(name, features)
