"""The questions `scaffold new` asks in a terminal, in an order that cannot end
in a refusal.

Features that exclude each other are one question ("several processes: none /
ddp / fsdp"); related ones are asked together (precision, the step, logging and
trackers, the cluster); a feature that an earlier answer rules out is not asked,
and the reason is shown instead. Every answer is checked as it is typed, so the
chosen set is always one that `scaffold new` accepts.
"""

from collections.abc import Callable
from dataclasses import dataclass

from scaffold.features import FEATURES_BY_NAME, Feature


@dataclass(frozen=True)
class Group:
    """Questions asked together: each feature yes/no, or (``one_of``) one of them."""

    title: str
    features: tuple[str, ...]
    one_of: bool = False
    none: str = ""  # the first option of a one_of question, choosing none


GROUPS: tuple[Group, ...] = (
    Group("Several processes", ("ddp", "fsdp"), one_of=True, none="one process"),
    Group("Precision and speed", ("amp", "compile")),
    Group("The optimizer step", ("clip", "accumulate", "multi-optim", "ema")),
    Group("When to stop, and debugging", ("early-stopping", "debug")),
    Group(
        "Logging and trackers (metrics.csv is always written)",
        ("tensorboard", "wandb", "mlflow"),
    ),
    Group("The cluster", ("slurm",)),
)


def excluded_by(feature: Feature, chosen: set[str]) -> str | None:
    """Why ``feature`` cannot join ``chosen`` (None if it can)."""
    for other_name in sorted(chosen):
        other = FEATURES_BY_NAME[other_name]
        if other_name in feature.conflicts:
            why = feature.why_conflicts
        elif feature.name in other.conflicts:
            why = other.why_conflicts
        else:
            continue
        return f"{feature.flag}: excluded by {other.flag}" + (
            f" ({why})" if why else ""
        )
    return None


Ask = Callable[[str], str]
Say = Callable[[str], None]


def _yes_no(ask: Ask, say: Say, prompt: str, default: bool) -> bool:
    hint = "[Y/n]" if default else "[y/N]"
    while True:
        answer = ask(f"{prompt} {hint}: ").strip().lower()
        if not answer:
            return default
        if answer in {"y", "yes"}:
            return True
        if answer in {"n", "no"}:
            return False
        say("  please answer y or n")


def _one_of(ask: Ask, say: Say, group: Group, offered: list[Feature]) -> str | None:
    say(f"  0) none: {group.none}")
    for number, feature in enumerate(offered, start=1):
        say(f"  {number}) {feature.name}: {feature.help}")
    names = [feature.name for feature in offered]
    while True:
        answer = ask(f"choose 0-{len(offered)} or a name [0]: ").strip().lower()
        if answer in {"", "0", "none"}:
            return None
        if answer.isdigit() and 1 <= int(answer) <= len(offered):
            return names[int(answer) - 1]
        if answer.lstrip("-") in names:
            return answer.lstrip("-")
        say(f"  please answer 0-{len(offered)}, none or {', '.join(names)}")


def ask_features(ask: Ask, say: Say) -> set[str]:
    """Ask group by group; return a feature set that validates."""
    chosen: set[str] = set()
    for group in GROUPS:
        say("")
        say(f"{group.title}:")
        offered = []
        for name in group.features:
            feature = FEATURES_BY_NAME[name]
            reason = excluded_by(feature, chosen)
            if reason is None:
                offered.append(feature)
            else:
                say(f"  (not offered) {reason}")
        if group.one_of and offered:
            picked = _one_of(ask, say, group, offered)
            chosen |= {picked} if picked else set()
            continue
        for feature in offered:
            # an answer in this group may rule out a later one in it
            reason = excluded_by(feature, chosen)
            if reason is not None:
                say(f"  (not offered) {reason}")
            elif _yes_no(ask, say, f"  {feature.flag:<16} {feature.help}", False):
                chosen.add(feature.name)
    return chosen


def confirm(ask: Ask, say: Say, chosen: list[str], command: str, target: str) -> bool:
    """Show the chosen set and the command that repeats it; ask before writing."""
    say("")
    say(f"Chosen: {', '.join(chosen) if chosen else 'no features (the base project)'}")
    say(f"To repeat: {command}")
    return _yes_no(ask, say, f"Write {target}?", True)
