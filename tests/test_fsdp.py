"""Sharded training (--fsdp: FSDP2 under torchrun, CPU, gloo, 2 processes), proven by running it.

Two projects with the same features besides the strategy (fsdp or ddp, each with
accumulate + clip + amp + debug) train the same model: an MLP of blocks whose widths (33,
17) do not divide by the world size, so that FSDP's shards are uneven. Options
switch each feature's effect off where a case does not want it, as in test_ddp.py.

FSDP and DDP see the same batches (the same sampler) and average the same
gradients (reduce-scatter against all-reduce), so after several steps their
weights must agree up to the rounding of those sums; checkpoints are directories
of shards (DCP) that resume exactly, on 2 processes or on 1, and a killed write
is never taken for a checkpoint.
"""

import subprocess
import sys
from pathlib import Path

import pytest
from helpers import (
    PLAIN,
    TINY_ARGS,
    assert_identical,
    feature_cases,
    load_checkpoint,
    read_metrics,
    render,
    train_env,
)

torch = pytest.importorskip("torch")

MODEL = '''
"""An MLP of blocks whose widths do not divide by 2: FSDP shards them unevenly."""

import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.linear = nn.Linear(n_in, n_out)
        self.norm = nn.LayerNorm(n_out)

    def forward(self, x):
        return torch.tanh(self.norm(self.linear(x)))


class BlockNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList([Block(8, 33), Block(33, 17)])
        self.head = nn.Linear(17, 4)

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def build_model(cfg):
    return BlockNet()


def compute_loss(model, batch):
    x, y = batch
    logits = model(x)
    loss = nn.functional.cross_entropy(logits.float(), y)
    return loss, {"loss": loss.detach(), "acc": (logits.argmax(-1) == y).float().mean()}
'''

N_TRAIN = 448  # 14 batches of 16 per rank and epoch
BATCH = 16  # per process
ACCUMULATE = 3  # windows of 3, 3, 3, 3 and a short one of 2
CLIP_NORM = 0.3  # below the gradient norms this model logs early on
CKPT_EVERY = 5
RESUME_STEP = 20  # mid-way through epoch 1 (14 steps an epoch)
LR = float(TINY_ARGS[TINY_ARGS.index("--lr") + 1])

COMMON = [
    *TINY_ARGS, "--n-train", str(N_TRAIN), "--batch-size", str(BATCH),
    "--ckpt-every", str(CKPT_EVERY), "--keep-last", "100", "--dist-timeout-s", "30",
]
CASES = feature_cases(ACCUMULATE, CLIP_NORM)
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]

RELOAD = '''
"""Set up a run, resume it from --resume, and save what was loaded as checkpoints/reloaded."""
import os
import sys

import torch.distributed as dist

import train

cfg = train.parse_config(sys.argv[1:])
world, device = train.setup_distributed(cfg)
run = train.set_up(cfg, world, device)
train.resume(run)
train.save_checkpoint(run, "reloaded")
dist.destroy_process_group()
os._exit(0)  # as train.py's __main__ ends (see there)
'''

KILL_IN_WRITE = '''
"""Run train.main; rank 1 kills itself (SIGKILL) inside its KILL_AT-th checkpoint write."""
import os
import signal
import sys

import train

save = train.dcp.save
calls = 0


def save_or_die(state, checkpoint_id):
    global calls
    calls += 1
    if os.environ["RANK"] == "1" and calls == int(os.environ["KILL_AT"]):
        os.kill(os.getpid(), signal.SIGKILL)  # rank 0 is writing its shards meanwhile
    return save(state, checkpoint_id=checkpoint_id)


train.dcp.save = save_or_die
code = train.main(sys.argv[1:])
sys.stdout.flush()
os._exit(code)  # as train.py's __main__ ends (see there)
'''


def run(argv: list[str], cwd: Path, check: bool = True, env: dict | None = None,
        timeout: float = 300) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                            env=train_env(env), check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited {result.returncode}\n"
                             f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}")
    return result


def full_state(checkpoint_dir: Path, tmp: Path) -> dict:
    """Everything a checkpoint directory holds, gathered from its shards by DCP's own
    converter (not by train.py's code)."""
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    out = tmp / f"{checkpoint_dir.parent.parent.name}-{checkpoint_dir.name}.pt"
    dcp_to_torch_save(checkpoint_dir, out)
    return torch.load(out, weights_only=False)


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


@pytest.fixture(scope="module")
def projects(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("fsdp")
    found = {}
    for strategy in ("fsdp", "ddp"):
        project = render(root, [strategy, "accumulate", "clip", "amp", "debug"], name=strategy)
        (project / "model.py").write_text(MODEL)
        found[strategy] = project
    return found


@pytest.fixture(scope="module")
def trained(projects):
    """trained(strategy, case) -> run dir of a 2-process run, each made once per module."""
    cache: dict[tuple[str, str], Path] = {}

    def get(strategy: str, case: str) -> Path:
        if (strategy, case) not in cache:
            project = projects[strategy]
            run_dir = project / "runs" / case
            result = run([*TORCHRUN, "train.py", *COMMON, *PLAIN, *CASES[case],
                          "--run-dir", str(run_dir)], project)
            (run_dir / "stdout.txt").write_text(result.stdout)
            cache[strategy, case] = run_dir
        return cache[strategy, case]

    return get


def final_weights(strategy: str, run_dir: Path) -> dict:
    # ddp: last.pt is written after the last step; fsdp: final.pt (last/ is shards)
    name = "final.pt" if strategy == "fsdp" else "last.pt"
    return load_checkpoint(run_dir / "checkpoints" / name)["model"]


# -----------------------------------------------------------------------------
# 1. FSDP on 2 processes == DDP on 2 processes


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_fsdp_equals_ddp_on_two_processes(trained, case):
    fsdp_dir, ddp_dir = trained("fsdp", case), trained("ddp", case)
    steps = load_checkpoint(fsdp_dir / "checkpoints" / "final.pt")["train_state"]["step"]
    assert steps == load_checkpoint(ddp_dir / "checkpoints" / "last.pt")["train_state"]["step"] >= 10
    if case == "bf16":
        # Both compute in bf16 (8 significant bits, a rounding is up to 2^-9
        # relative), but not the same operations: autocast (ddp) rounds the inputs
        # of matmuls only, FSDP's policy rounds the parameters and every activation
        # (LayerNorm's, the additions'). Through two blocks forward and back that is
        # a few roundings more on each gradient: up to ~2^-6 relative, which AdamW
        # (an update of about lr whatever the gradient's scale) turns into about
        # lr * 2^-6 per parameter per step. Summed over the steps: about 0.02,
        # against weights that moved by up to steps * lr (1.4 here); a wrong
        # sharding, reduction or cast changes every step's gradient wholesale.
        atol = steps * LR * 2**-6
        # the feature really ran: bf16 moved the weights by far more than fp32 noise
        plain = final_weights("fsdp", trained("fsdp", "plain"))
        assert max_diff(final_weights("fsdp", fsdp_dir), plain) > 100 * steps * LR * 2**-20
    else:
        # fp32: the two reductions add the same two numbers per element, in another
        # order at most; AdamW turns a last-bit difference in a gradient into at most
        # a few last bits of lr per step (its update is m / sqrt(v), of order 1):
        # 8 ulps of lr per step is a generous budget, far below any real difference.
        atol = steps * LR * 2**-20
    a, b = final_weights("fsdp", fsdp_dir), final_weights("ddp", ddp_dir)
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].dtype == torch.float32, name  # sharded weights stay fp32
        assert torch.allclose(a[name], b[name], rtol=0, atol=atol), (
            f"{case}: {name} differs by {(a[name] - b[name]).abs().max().item():.3g} > {atol:.3g}"
        )
    # AdamW hardly sees a gradient's scale: the logged numbers do (a sum over the
    # ranks instead of a mean doubles the clipping norm)
    rows = {s: [r for r in read_metrics(d) if r["split"] == "train"]
            for s, d in (("fsdp", fsdp_dir), ("ddp", ddp_dir))}
    assert [r["step"] for r in rows["fsdp"]] == [r["step"] for r in rows["ddp"]]
    keys = ["loss"] + (["grad_norm"] if case == "clip" else [])
    rel = 2**-6 if case == "bf16" else 1e-5
    for f, d in zip(rows["fsdp"], rows["ddp"], strict=True):
        for key in keys:
            assert float(f[key]) == pytest.approx(float(d[key]), rel=rel), (f["step"], key)
    if case == "clip":
        assert max(float(r["grad_norm"]) for r in rows["fsdp"]) > CLIP_NORM  # it clipped


@pytest.mark.slow
def test_fsdp_accumulation_equals_the_big_batch(projects, trained):
    # Windows of ACCUMULATE micro-batches of BATCH (the epoch's last one of 2) hold,
    # rank by rank, exactly the samples of batches of ACCUMULATE * BATCH (the last
    # one short alike), and the micro-batch losses are divided by the window's size:
    # the same gradient, reduced once per step either way.
    project = projects["fsdp"]
    big = project / "runs" / "big-batch"
    run([*TORCHRUN, "train.py", *COMMON, *PLAIN, "--batch-size", str(ACCUMULATE * BATCH),
         "--run-dir", str(big)], project)
    accumulated = trained("fsdp", "accumulate")
    steps = load_checkpoint(big / "checkpoints" / "final.pt")["train_state"]["step"]
    assert steps == load_checkpoint(accumulated / "checkpoints" / "final.pt")["train_state"]["step"]
    a, b = final_weights("fsdp", accumulated), final_weights("fsdp", big)
    for name in a:  # the fp32 budget of the test above
        assert torch.allclose(a[name], b[name], rtol=0, atol=steps * LR * 2**-20), name


COUNT_REDUCTIONS = '''
"""Run train.main counting the gradient reductions (reduce-scatters) of each rank."""
import os
import sys
from pathlib import Path

import torch.distributed as dist

import train

calls = 0
reduce_scatter = dist.reduce_scatter_single


def counting(*args, **kwargs):
    global calls
    calls += 1
    return reduce_scatter(*args, **kwargs)


dist.reduce_scatter_single = counting
code = train.main(sys.argv[1:])
Path(f"reductions_rank{os.environ['RANK']}.txt").write_text(str(calls))
sys.stdout.flush()
os._exit(code)  # as train.py's __main__ ends (see there)
'''


@pytest.mark.slow
def test_one_gradient_reduction_per_optimizer_step_with_accumulation(projects, tmp_path):
    project = projects["fsdp"]
    (project / "count_reductions.py").write_text(COUNT_REDUCTIONS)
    run_dir = tmp_path / "counted"
    run([*TORCHRUN, "count_reductions.py", *COMMON, *PLAIN, "--accumulate-steps",
         str(ACCUMULATE), "--ckpt-every", "0", "--run-dir", str(run_dir)], project)
    steps = load_checkpoint(run_dir / "checkpoints" / "final.pt")["train_state"]["step"]
    micro_batches = 2 * (N_TRAIN // (2 * BATCH))
    assert steps < micro_batches  # accumulation really happened
    # one reduce-scatter per sharded group (2 blocks, and the root) per step
    groups = 3
    for rank in (0, 1):
        assert int((project / f"reductions_rank{rank}.txt").read_text()) == groups * steps


# -----------------------------------------------------------------------------
# 2. exact resume on 2 processes


@pytest.mark.slow
def test_resume_mid_epoch_on_two_processes_is_bit_identical(projects, trained, tmp_path):
    project, straight = projects["fsdp"], trained("fsdp", "plain")
    checkpoint = straight / "checkpoints" / f"step_{RESUME_STEP:08d}"
    state = load_checkpoint(checkpoint / "meta.pt")["train_state"]
    assert 0 < state["batch_in_epoch"] < N_TRAIN // (2 * BATCH), state  # mid-epoch
    resumed = project / "runs" / "resumed"
    result = run([*TORCHRUN, "train.py", *COMMON, *PLAIN, "--run-dir", str(resumed),
                  "--resume", str(checkpoint)], project)
    assert f"at step {RESUME_STEP}" in result.stdout
    a = full_state(straight / "checkpoints" / "last", tmp_path)
    b = full_state(resumed / "checkpoints" / "last", tmp_path)
    assert a.keys() == {"model", "optimizer"}
    assert_identical(a, b)  # weights and every AdamW moment, bit for bit
    assert_identical(final_weights("fsdp", straight), final_weights("fsdp", resumed))

    def after_resume(run_dir: Path) -> list[list[str]]:
        return [[r[k] for k in ("step", "split", "loss", "acc")]
                for r in read_metrics(run_dir) if int(r["step"]) > RESUME_STEP]

    assert after_resume(straight) == after_resume(resumed)


# -----------------------------------------------------------------------------
# 3. a checkpoint of 2 processes resumes on 1 and on 2


@pytest.mark.slow
@pytest.mark.parametrize("nproc", [1, 2])
def test_checkpoint_of_two_processes_loads_on_one_and_on_two(projects, trained, tmp_path, nproc):
    project, straight = projects["fsdp"], trained("fsdp", "plain")
    checkpoint = straight / "checkpoints" / f"step_{RESUME_STEP:08d}"
    (project / "reload.py").write_text(RELOAD)
    launch = TORCHRUN if nproc == 2 else [sys.executable]
    # 2 processes of BATCH hold the global batch that 1 process of 2 * BATCH holds
    batch = ["--batch-size", str(BATCH * 2 // nproc)]
    reloaded_dir = tmp_path / f"reloaded-{nproc}"
    run([*launch, "reload.py", *COMMON, *PLAIN, *batch, "--run-dir", str(reloaded_dir),
         "--resume", str(checkpoint)], project)
    saved = full_state(checkpoint, tmp_path)
    loaded = full_state(reloaded_dir / "checkpoints" / "reloaded", tmp_path)
    assert_identical(saved, loaded)  # every shard found its place, the optimizer's too
    meta = load_checkpoint(reloaded_dir / "checkpoints" / "reloaded" / "meta.pt")
    assert meta["train_state"] == load_checkpoint(checkpoint / "meta.pt")["train_state"]
    if nproc == 2:
        return  # training goes on from there: test_resume_mid_epoch_on_two_processes...
    # and training goes on from there to the end
    continued = tmp_path / f"continued-{nproc}"
    result = run([*launch, "train.py", *COMMON, *PLAIN, *batch, "--run-dir", str(continued),
                  "--resume", str(checkpoint)], project)
    assert f"at step {RESUME_STEP}" in result.stdout
    assert "saved by 2 ranks, running 1" in result.stdout
    end = load_checkpoint(continued / "checkpoints" / "final.pt")
    assert end["train_state"]["step"] == load_checkpoint(straight / "checkpoints" / "final.pt")["train_state"]["step"]


# -----------------------------------------------------------------------------
# 4. a rank killed while writing a checkpoint


@pytest.mark.slow
def test_rank_killed_during_a_checkpoint_write_resumes_from_the_previous_one(projects, trained):
    project = projects["fsdp"]
    (project / "kill_in_write.py").write_text(KILL_IN_WRITE)
    run_dir = project / "runs" / "killed"
    # checkpoints at steps 5, 10, 14 (last), 15: the 4th write is step_00000015's
    args = [*COMMON, *PLAIN, "--run-dir", str(run_dir)]
    result = run([*TORCHRUN, "kill_in_write.py", *args], project, check=False,
                 env={"KILL_AT": "4"}, timeout=120)
    assert result.returncode != 0
    ckpt_dir = run_dir / "checkpoints"
    assert (ckpt_dir / ".step_00000015.tmp").is_dir()  # the write really was cut short
    assert not (ckpt_dir / "step_00000015").exists()
    assert (ckpt_dir / "step_00000010").is_dir() and (ckpt_dir / "last").is_dir()
    resumed = run([*TORCHRUN, "train.py", *args, "--resume", "auto"], project)
    assert f"resume: {ckpt_dir / 'last'} at step 14" in resumed.stdout
    # and ends exactly where an uninterrupted run ends
    assert_identical(final_weights("fsdp", run_dir), final_weights("fsdp", trained("fsdp", "plain")))


# -----------------------------------------------------------------------------
# 5. single files for inference


@pytest.mark.slow
def test_single_file_checkpoints_hold_the_gathered_shards_and_load_without_a_process_group(
    projects, trained, tmp_path
):
    project, run_dir = projects["fsdp"], trained("fsdp", "plain")
    final = load_checkpoint(run_dir / "checkpoints" / "final.pt")
    gathered = full_state(run_dir / "checkpoints" / "last", tmp_path)["model"]
    assert_identical(final["model"], gathered)
    # best.pt and final.pt load with load_model() in a plain process (no torchrun)
    # and so does the file that the README's command exports from any directory
    check = (
        "import sys, torch, train\n"
        "train.export_checkpoint(sys.argv[1], sys.argv[2])\n"
        "for path in ('final.pt', 'best.pt', sys.argv[2]):\n"
        "    if path != sys.argv[2]: path = sys.argv[3] + '/' + path\n"
        "    model = train.load_model(path)\n"
        "    assert not torch.distributed.is_initialized()\n"
        "    torch.save(model.state_dict(), path + '.loaded')\n"
    )
    exported = tmp_path / "exported.pt"
    run([sys.executable, "-c", check, str(run_dir / "checkpoints" / "last"), str(exported),
         str(run_dir / "checkpoints")], project)
    assert_identical(torch.load(str(exported) + ".loaded"), final["model"])
    assert_identical(load_checkpoint(exported)["model"], final["model"])
    best = load_checkpoint(run_dir / "checkpoints" / "best.pt")
    assert_identical(torch.load(run_dir / "checkpoints" / "best.pt.loaded"), best["model"])
    assert best["model"].keys() == final["model"].keys()


# -----------------------------------------------------------------------------
# 6. the features of the loop under --fsdp


@pytest.mark.slow
def test_debug_norms_under_fsdp_equal_those_under_ddp(trained):
    runs = {strategy: trained(strategy, "clip") for strategy in ("fsdp", "ddp")}
    # every rank runs the forward that shows the shapes (it gathers shards), rank 0 prints
    assert (runs["fsdp"] / "stdout.txt").read_text().count("module shapes for one batch:") == 1
    rows = {s: [r for r in read_metrics(d) if r["split"] == "train"] for s, d in runs.items()}
    norms = [k for k in rows["ddp"][0] if k.startswith("grad_norm/")]
    assert "grad_norm/blocks.0.linear.weight" in norms
    assert [k for k in rows["fsdp"][0] if k.startswith("grad_norm/")] == norms
    for f, d in zip(rows["fsdp"], rows["ddp"], strict=True):
        assert [f[key] == "" for key in norms] == [d[key] == "" for key in norms]
        for key in norms:
            # the norm over all shards, not the norm of rank 0's shard
            if d[key]:
                assert float(f[key]) == pytest.approx(float(d[key]), rel=1e-4), (f["step"], key)
    assert any(r[norms[0]] for r in rows["fsdp"])


@pytest.mark.slow
def test_compile_trains_like_plain_fsdp(tmp_path, trained):
    project = render(tmp_path, ["fsdp", "compile", "accumulate", "clip", "amp"], name="fsdp")
    (project / "model.py").write_text(MODEL)
    run_dir = project / "runs" / "compiled"
    run([*TORCHRUN, "train.py", *COMMON, *PLAIN, "--run-dir", str(run_dir)], project,
        timeout=600)
    a, b = final_weights("fsdp", run_dir), final_weights("fsdp", trained("fsdp", "plain"))
    steps = load_checkpoint(run_dir / "checkpoints" / "final.pt")["train_state"]["step"]
    # compiled kernels may fuse and round differently: the fp32 budget of test 1
    for name in a:
        assert torch.allclose(a[name], b[name], rtol=0, atol=steps * LR * 2**-20), name


@pytest.mark.slow
def test_activation_checkpointing_recomputes_exactly(projects, trained):
    project = projects["fsdp"]
    run_dir = project / "runs" / "recomputed"
    run([*TORCHRUN, "train.py", *COMMON, *PLAIN, "--activation-checkpointing",
         "--run-dir", str(run_dir)], project)
    # the same operations on the same values, once more in the backward pass
    assert_identical(final_weights("fsdp", run_dir), final_weights("fsdp", trained("fsdp", "plain")))


def test_fp16_is_refused_with_one_line(projects):
    result = run([sys.executable, "train.py", "--amp-dtype", "fp16", "--fast-dev-run"],
                 projects["fsdp"], check=False)
    assert result.returncode == 2
    # argparse's usage, then one line of ours
    assert result.stderr.strip().splitlines()[-1] == (
        "train.py: error: --amp-dtype fp16: --fsdp casts without loss scaling, which "
        "fp16 gradients need; use bf16 (or off)"
    )


@pytest.mark.parametrize("other", ["ddp", "ema", "multi-optim"])
def test_scaffold_new_refuses_fsdp_with_a_conflicting_feature(tmp_path, other):
    result = subprocess.run([sys.executable, "-m", "scaffold", "new", str(tmp_path / "p"),
                             "--fsdp", f"--{other}"], capture_output=True, text=True)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"conflicts with {other}" in lines[0], result.stderr
    assert not (tmp_path / "p").exists()

