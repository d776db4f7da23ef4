"""Which feature sets the render tests check, now that all 2**N are too many.

Every template conditional tests a few features at once (`{% if ddp and amp %}`,
`{% if accumulate and not ddp %}`), so a render bug shows with some choice of
in/out for a few features. The sets below make, for any 5 features, every in/out
choice of them that some valid project makes (a 5-way covering array). Most of
that comes from the sets of at most 2 features and those of all but at most 2
(any 5 features with k chosen: k <= 2 is a small set, k >= 3 a large one);
where conflicts rule some of those out, sets picked greedily from a fixed seed
(the same sets every run) make the choices that are left.
"""

import functools
import itertools
import random

from scaffold.errors import InvalidSpecError
from scaffold.features import FEATURES, compatible_with
from scaffold.spec import ProjectSpec

NAMES = tuple(f.name for f in FEATURES)
STRENGTH = 5  # interactions of this many features are covered
CANDIDATES = 20  # random valid sets tried for each set that is picked
SEED = 20261203


@functools.cache
def is_valid(features: frozenset[str]) -> bool:
    """Does `scaffold new` accept this feature set?"""
    try:
        ProjectSpec.create("x", set(features))
    except InvalidSpecError:
        return False
    return True


def _choices(features: frozenset[str]) -> set[tuple]:
    """The (feature, in?) combinations of STRENGTH features that a set makes."""
    picked = [(name, name in features) for name in NAMES]
    return set(itertools.combinations(picked, STRENGTH))


def _closure(features) -> frozenset[str]:
    """The features as a set (no feature requires another: the smallest set with
    the chosen ones is the chosen ones)."""
    return frozenset(features)


def _possible(choice: tuple) -> bool:
    """Does some valid set make this choice? Requirements only add features and
    conflicts only forbid pairs, so the smallest set with the chosen ones is it."""
    smallest = _closure(name for name, chosen in choice if chosen)
    return is_valid(smallest) and not any(n in smallest for n, chosen in choice if not chosen)


def _random_valid(rng: random.Random, choice: tuple) -> frozenset[str] | None:
    """A random valid set that makes `choice`, or None if this draw failed."""
    wanted = dict(choice)
    features = _closure(n for n in NAMES if wanted.get(n, rng.random() < 0.5))
    if is_valid(features) and all((n in features) == v for n, v in choice):
        return features
    return None


@functools.cache
def covering_sets() -> tuple[frozenset[str], ...]:
    """The sets the render tests check, in a fixed order (see the module docstring)."""
    whole = frozenset(NAMES)
    chosen: list[frozenset[str]] = [frozenset()]
    chosen += [frozenset({n}) for n in NAMES]
    chosen += [frozenset(pair) for pair in itertools.combinations(NAMES, 2)]
    chosen += [whole - set(pair) for pair in itertools.combinations(NAMES, 2)]
    chosen += [whole - {n} for n in NAMES] + [whole]
    # the largest projects, where features conflict (all that go with --ddp, ...)
    chosen += [compatible_with(n) for n in NAMES]
    chosen = [s for s in dict.fromkeys(chosen) if is_valid(s)]
    # only the combinations that some valid set makes can be asked for
    every = [tuple(zip(group, values, strict=True))
             for group in itertools.combinations(NAMES, STRENGTH)
             for values in itertools.product((False, True), repeat=STRENGTH)]
    uncovered = {choice for choice in every if _possible(choice)}
    for s in chosen:
        uncovered -= _choices(s)
    rng = random.Random(SEED)
    while uncovered:
        # random sets that make the first choice still missing, the one making the
        # most missing choices kept; the smallest set that makes it, if none does
        first = min(uncovered)
        drawn = (_random_valid(rng, first) for _ in range(CANDIDATES))
        candidates = [s for s in drawn if s is not None]
        candidates.append(_closure(name for name, chosen in first if chosen))
        best = max(candidates, key=lambda s: len(_choices(s) & uncovered))
        uncovered -= _choices(best)
        chosen.append(best)
    return tuple(dict.fromkeys(chosen))
