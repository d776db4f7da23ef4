"""Rerunning a run from its own record: --config, command.txt, and the resume check.

Every run is its own `python train.py` process of a rendered base project with the
probe fixtures (dropout on: a rerun that missed an option or the seed would end with
other weights).
"""

import json
import shlex
from pathlib import Path

import pytest
from helpers import (
    TINY_ARGS,
    assert_identical,
    ckpt,
    read_metrics,
    read_summary,
    render,
    render_probe,
    rows_after,
    run_torchrun,
    run_train,
)

# 10 batches per epoch, 2 epochs: 20 steps, a periodic checkpoint every 5
ARGS = shlex.split("--n-train 320 --max-epochs 2 --ckpt-every 5 --log-every 5 --dropout 0.1")


def config(project: Path, run: str) -> dict:
    return json.loads((project / "runs" / run / "config.json").read_text())


def pairs(args: list[str]) -> dict[str, str]:
    """{flag: value} of `--flag value ...` (a later value of a flag wins)."""
    return dict(zip(args[::2], args[1::2], strict=True))


def last_error_line(result) -> str:
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    return result.stderr.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """The base project, with the run `orig` done."""
    project = render_probe(tmp_path_factory.mktemp("rerun"))
    run_train(project, *ARGS, "--run-dir", "runs/orig")
    assert ckpt(project, "orig")["train_state"]["step"] == 20
    return project


def test_a_run_repeated_from_its_config_json_is_bit_identical(project):
    # no other option: everything comes from the file, but the run directory
    run_train(project, "--config", "runs/orig/config.json", "--run-dir", "runs/copy",
              tiny_defaults=False)
    assert_identical(ckpt(project, "copy")["model"], ckpt(project, "orig")["model"], "model")
    assert_identical(ckpt(project, "copy")["optimizer"], ckpt(project, "orig")["optimizer"],
                     "optimizer")
    rows = rows_after(project, "copy", -1)  # every row, without the timing columns
    assert len(rows) > 4 and rows == rows_after(project, "orig", -1)
    assert read_summary(project / "runs" / "copy") == read_summary(project / "runs" / "orig")
    copy = config(project, "copy")
    assert copy.pop("run_dir") == "runs/copy"
    assert "config" not in copy  # the file's own path is not an option
    assert copy == {k: v for k, v in config(project, "orig").items() if k != "run_dir"}


def test_flags_given_with_config_override_it(project):
    run_train(project, "--config", "runs/orig/config.json", "--lr", "0.02",
              "--max-epochs", "1", "--run-dir", "runs/override", tiny_defaults=False)
    saved = config(project, "override")
    assert (saved["lr"], saved["max_epochs"], saved["run_dir"]) == (0.02, 1, "runs/override")
    assert (saved["n_train"], saved["dropout"]) == (320, 0.1)  # the rest from the file
    assert ckpt(project, "override")["train_state"]["step"] == 10


BAD_CONFIGS = [
    ({"lrr": 0.1}, "lrr", "not an option of this project"),
    ({"clip_norm": 1.0}, "clip_norm", "not an option of this project"),  # a feature's
    ({"batch_size": "32"}, "batch_size", "must be int"),
    ({"batch_size": 32.0}, "batch_size", "must be int"),
    ({"deterministic": 1}, "deterministic", "must be bool"),
    ({"seed": True}, "seed", "must be int"),
    ({"run_dir": None}, "run_dir", "must be str"),
]


@pytest.mark.parametrize("saved, key, words", BAD_CONFIGS,
                         ids=[json.dumps(saved) for saved, _, _ in BAD_CONFIGS])
def test_a_bad_config_file_is_one_line_naming_the_key(project, saved, key, words):
    path = project / "bad.json"
    path.write_text(json.dumps({**config(project, "orig"), "run_dir": "runs/bad", **saved}))
    result = run_train(project, "--config", "bad.json", check=False, tiny_defaults=False)
    last = last_error_line(result)
    assert key in last and words in last and "--config bad.json" in last, result.stderr
    assert not (project / "runs" / "bad").exists()


def test_an_int_is_a_float_in_a_config_file_and_fast_dev_run_writes_no_command(project):
    path = project / "int_lr.json"
    path.write_text(json.dumps({"lr": 1, "run_dir": "runs/int_lr"}))
    result = run_train(project, "--config", "int_lr.json", "--fast-dev-run", "--n-train", "64",
                       tiny_defaults=False)
    # the command lists the options in Config's order, lr as the float it is
    assert "rerun with: python train.py --run-dir runs/int_lr --lr 1.0 " in result.stdout
    assert not (project / "runs" / "int_lr").exists()


def test_command_txt_repeats_the_run(project):
    command = (project / "runs" / "orig" / "command.txt").read_text()
    assert command.startswith("python train.py --run-dir runs/orig ")
    assert command.endswith("\n") and command.count("\n") == 1
    argv = shlex.split(command)
    assert "--resume" not in argv and "--config" not in argv  # only what differs
    # every option given that differs from its default, each once, the last value
    given = {**pairs(TINY_ARGS), **pairs(ARGS)}
    assert argv[:4] == ["python", "train.py", "--run-dir", "runs/orig"]
    assert pairs(argv[4:]) == given and len(argv) == 4 + 2 * len(given)
    # the same command, into another run directory (the last --run-dir counts)
    run_train(project, *argv[2:], "--run-dir", "runs/again", tiny_defaults=False)
    again, orig = config(project, "again"), config(project, "orig")
    assert again.pop("run_dir") == "runs/again" and orig.pop("run_dir") == "runs/orig"
    assert again == orig
    assert_identical(ckpt(project, "again")["model"], ckpt(project, "orig")["model"], "model")


def test_resume_with_other_options_stops_unless_told_or_harmless(project):
    run_dir = project / "runs" / "mm"
    run_train(project, *ARGS, "--run-dir", "runs/mm", "--max-steps", "8")
    assert ckpt(project, "mm")["train_state"]["step"] == 8
    before = {p.name: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}

    # another learning rate (and a harmless max_steps): named with both values
    result = run_train(project, *ARGS, "--run-dir", "runs/mm", "--resume", "auto",
                       "--lr", "0.01", "--max-steps", "12", check=False)
    last = last_error_line(result)
    assert "lr 0.05 -> 0.01" in last and "--resume-anyway" in last, result.stderr
    assert "max_steps" not in last
    after = {p.name: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    assert after == before  # nothing trained, nothing rewritten
    # an explicit checkpoint of the same run directory is checked as well
    checkpoint = str(run_dir / "checkpoints" / "last.pt")
    result = run_train(project, *ARGS, "--run-dir", "runs/mm", "--resume", checkpoint,
                       "--batch-size", "16", check=False)
    assert "batch_size 32 -> 16" in last_error_line(result)

    # --resume-anyway: it continues, with the new learning rate
    result = run_train(project, *ARGS, "--run-dir", "runs/mm", "--resume", "auto",
                       "--lr", "0.01", "--max-steps", "12", "--resume-anyway")
    assert "at step 8" in result.stdout
    assert ckpt(project, "mm")["train_state"]["step"] == 12 and config(project, "mm")["lr"] == 0.01

    # only harmless differences (log_every, max_steps, and no --resume-anyway now)
    result = run_train(project, *ARGS, "--run-dir", "runs/mm", "--resume", "auto",
                       "--lr", "0.01", "--max-steps", "16", "--log-every", "2")
    assert "at step 12" in result.stdout
    assert ckpt(project, "mm")["train_state"]["step"] == 16
    train_rows = [int(r["step"]) for r in read_metrics(run_dir) if r["split"] == "train"]
    assert train_rows == [5, 8, 10, 12, 14, 16]  # each stop logs; then every 2nd step


def test_a_run_directory_without_config_json_is_not_checked(project):
    checkpoint = str(project / "runs" / "orig" / "checkpoints" / "step_00000010.pt")
    result = run_train(project, *ARGS, "--run-dir", "runs/fresh", "--resume", checkpoint,
                       "--lr", "0.01")
    assert "at step 10" in result.stdout


def test_under_ddp_one_command_txt_names_torchrun(tmp_path):
    project = render(tmp_path, ["ddp"])
    result = run_torchrun(project, 2, "--max-epochs", "1", "--run-dir", "runs/d")
    command = (project / "runs" / "d" / "command.txt").read_text()
    assert command.startswith("torchrun --standalone --nproc_per_node=2 train.py ")
    assert result.stdout.count("rerun with: ") == 1  # rank 0 prints, rank 0 writes
    assert [p.name for p in (project / "runs" / "d").glob("command*")] == ["command.txt"]
    # the same options in one process: the command without the launcher
    single = run_train(project, "--max-epochs", "1", "--run-dir", "runs/d1", "--fast-dev-run")
    assert "rerun with: python train.py --run-dir runs/d1 " in single.stdout
