"""`scaffold new NAME` in a terminal, driven through a pseudo-terminal as a person
types: alternatives are one question, a feature that an earlier answer rules out is
not offered (the reason is shown), the chosen set and the command that repeats it
come before anything is written, and Ctrl-C at any point leaves nothing behind."""

import os
import pty
import re
import select
import sys
import time
from pathlib import Path

import pytest

from scaffold.chooser import GROUPS, ask_features
from scaffold.features import FEATURES, FEATURES_BY_NAME
from scaffold.manifest import read_manifest
from scaffold.spec import ProjectSpec

REPO = Path(__file__).resolve().parent.parent


class Terminal:
    """`python -m scaffold ARGS` (this checkout) on a pseudo-terminal of its own."""

    def __init__(self, cwd: Path, *args: str):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: the terminal is its stdin, stdout and stderr
            try:
                os.chdir(cwd)
                os.environ["PYTHONPATH"] = str(REPO)
                os.execv(sys.executable, [sys.executable, "-m", "scaffold", *args])
            finally:
                os._exit(127)
        self.output = ""
        self.seen = 0  # what expect() has matched up to

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return True
        try:
            chunk = os.read(self.fd, 4096)
        except OSError:  # EIO: the child closed the terminal
            chunk = b""
        self.output += chunk.decode("utf-8", errors="replace")
        return bool(chunk)

    def expect(self, text: str, timeout: float = 60) -> None:
        """Wait until ``text`` appears after what was matched before."""
        deadline = time.monotonic() + timeout
        while text not in self.output[self.seen:]:
            left = deadline - time.monotonic()
            if left <= 0 or not self._read(left):
                raise AssertionError(f"no {text!r} in the terminal:\n{self.output}")
        self.seen = self.output.index(text, self.seen) + len(text)

    def type(self, text: str) -> None:
        os.write(self.fd, text.encode())

    def answer(self, reply: str, prompt: str = "]: ") -> None:
        """Wait for the next prompt, then type ``reply`` and Enter."""
        self.expect(prompt)
        self.type(reply + "\r")

    def wait(self, timeout: float = 60) -> int:
        """Read to the end; the exit code."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._read(deadline - time.monotonic()):
            pass
        _, status = os.waitpid(self.pid, 0)
        os.close(self.fd)
        return os.waitstatus_to_exitcode(status)


def test_every_feature_is_asked_in_exactly_one_group():
    asked = [name for group in GROUPS for name in group.features]
    assert sorted(asked) == sorted(feature.name for feature in FEATURES)
    # features that exclude each other are one question, or the later one is
    # never asked once the earlier is chosen (the chooser checks each answer)
    for group in GROUPS:
        if group.one_of:
            for name in group.features:
                others = set(group.features) - {name}
                feature = FEATURES_BY_NAME[name]
                assert others & (set(feature.conflicts) | {
                    o for o in others if name in FEATURES_BY_NAME[o].conflicts}), name



def test_no_sequence_of_answers_ends_in_a_refusal():
    # every answer to the first question, then every yes/no pattern for the
    # questions that follow (as many as there are features): each ends in a set
    # that `scaffold new` accepts, and every feature is reachable
    yes_no = len(FEATURES) - 1
    reached = set()
    for first in ("0", "1", "2"):
        for mask in range(2**yes_no):
            replies = iter([first, *("y" if mask >> i & 1 else "n" for i in range(yes_no))])
            chosen = ask_features(lambda prompt, r=replies: next(r), lambda line: None)
            ProjectSpec.create("proj", chosen)  # raises on a refused set
            reached |= chosen
    assert reached == {feature.name for feature in FEATURES}

def test_a_person_chooses_sees_the_summary_and_the_project_is_written(tmp_path):
    term = Terminal(tmp_path, "new", "proj")
    term.expect("Several processes")
    term.answer("fsdp", prompt="choose 0-2 or a name [0]: ")
    term.answer("y")  # --amp
    term.answer("")  # --compile: Enter keeps no
    # ruled out by the answer to the first question: said, not asked
    term.expect("(not offered) --multi-optim: excluded by --fsdp")
    term.expect("(not offered) --ema: excluded by --fsdp")
    term.expect("--clip")
    term.answer("maybe")
    term.expect("please answer y or n")
    term.answer("y")  # --clip
    for _ in ("accumulate", "early-stopping", "debug", "tensorboard", "wandb",
              "mlflow", "slurm"):
        term.answer("")
    term.expect("Chosen: fsdp, amp, clip")
    term.expect("To repeat: scaffold new proj --fsdp --amp --clip")
    term.expect("Write proj? [Y/n]: ")
    assert not (tmp_path / "proj").exists(), "written before the confirmation"
    term.type("\r")
    term.expect("Created proj (3 feature(s)).")
    assert term.wait() == 0, term.output
    assert read_manifest(tmp_path / "proj").spec.features == {"fsdp", "amp", "clip"}
    # the alternatives were one question: neither is a yes/no question of its own
    assert not re.search(r"^\s*--(fsdp|ddp)\s.*\[y/N\]", term.output, re.MULTILINE)


@pytest.mark.parametrize("where", ["new directory", "existing directory"])
@pytest.mark.parametrize("stop_at", ["a question", "the confirmation"])
def test_ctrl_c_leaves_nothing_behind(tmp_path, where, stop_at):
    if where == "new directory":
        cwd, args, target = tmp_path, ("new", "proj"), tmp_path / "proj"
    else:
        target = cwd = tmp_path / "mine"
        cwd.mkdir()
        (cwd / "model.py").write_text("# my model\n")
        args = ("new", ".")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    term = Terminal(cwd, *args)
    term.answer("ddp", prompt="choose 0-2 or a name [0]: ")
    term.answer("y")  # --amp
    if stop_at == "the confirmation":
        term.expect("--compile")
        term.type("\r" * (len(FEATURES) - 3))  # Enter for each question left
        term.expect("Write ")
    else:
        term.expect("--compile")
    # A person's Ctrl-C comes a moment after the prompt: one that lands between
    # CPython's signal check and its blocking read of the terminal is only acted
    # on at the next key (a race of input() itself, seen under heavy load)
    time.sleep(0.5)
    term.type("\x03")  # Ctrl-C, as the terminal sends it: SIGINT
    term.expect("Stopped; nothing written.")
    assert term.wait() == 130, term.output
    assert "Traceback" not in term.output
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    assert target.exists() == (where == "existing directory")
