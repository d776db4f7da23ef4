"""What each feature is for, where its code lives, and the traps it avoids.

The one source of the per-feature explanations: `scaffold explain FEATURE` prints
them and `generated_examples/README.md` is generated from them. Plain data, cheap
to import. The tests check the data against the renders: every named function
exists in the feature's project, and the options listed are exactly the `Config`
fields the feature adds.
"""

import textwrap
from dataclasses import dataclass

from scaffold.errors import InvalidSpecError
from scaffold.features import FEATURES_BY_NAME


@dataclass(frozen=True)
class Location:
    """A place in a generated project where a feature's code lives."""

    file: str  # relative path in the project
    name: str | None  # a function or class defined in `file`; None: the whole file
    what: str  # what happens there


@dataclass(frozen=True)
class Explanation:
    """One feature, for a reader who knows PyTorch but not scaffold."""

    title: str
    problem: str  # what goes wrong or is missing without it
    where: tuple[Location, ...]
    options: tuple[tuple[str, str], ...]  # (train.py option it adds, meaning)
    traps: tuple[str, ...]  # correctness traps the generated code avoids
    usage: tuple[str, ...] = ()  # command lines that run on a CPU in the project
    # command lines that need a cluster, several machines or start a server
    launch: tuple[str, ...] = ()


EXPLANATIONS: dict[str, Explanation] = {
    "ddp": Explanation(
        title="Multi-GPU and multi-node training (DistributedDataParallel)",
        problem=(
            "One process trains on one device. To use several GPUs or machines you "
            "start one process per device (torchrun), each with a replica of the model "
            "wrapped in DistributedDataParallel, which averages gradients during "
            "backward. The wrapper is the easy part; the rest is what goes wrong: "
            "which device each process takes, how the data is split, how metrics, "
            "checkpoints and stop decisions stay consistent across processes, and how "
            "they shut down. `--batch-size` becomes per process."
        ),
        where=(
            Location(
                "train.py",
                "setup_distributed",
                "ranks from torchrun's RANK/LOCAL_RANK/WORLD_SIZE, this rank's device, "
                "init_process_group (nccl on GPUs, gloo on CPUs) with a bounded "
                "timeout",
            ),
            Location(
                "train.py",
                "ShardSampler",
                "each rank its own slice of a permutation seeded by (seed, epoch); "
                "equal lengths on all ranks",
            ),
            Location(
                "train.py",
                "evaluate",
                "validation and test metrics summed as value x count and count, "
                "all-reduced, then divided",
            ),
            Location(
                "train.py",
                "set_up",
                "the DDP wrap (one DDP per optimized sub-model with --multi-optim)",
            ),
            Location(
                "train.py",
                "save_checkpoint",
                "every rank's RNG state gathered into each checkpoint (a collective "
                "that every rank calls); rank 0 writes",
            ),
            Location(
                "train.py",
                "agreed_requests",
                "stop requests all-reduced at steps that every rank reaches together",
            ),
            Location(
                "train.py",
                "finish",
                "rank 0 loads best.pt and broadcasts its weights to the other ranks",
            ),
            Location("train.py", "main", "destroy_process_group() in a finally block"),
        ),
        options=(
            (
                "--dist-timeout-s",
                "seconds a collective may wait before the job fails (a dead rank)",
            ),
            (
                "--find-unused-parameters",
                "let DDP allow parameters that some batches leave without gradient",
            ),
        ),
        traps=(
            (
                "The global batch is explicit: `--batch-size` is per process, and the "
                "global batch (batch_size x processes) is printed at start, so "
                "changing the number of GPUs never silently changes the optimization."
            ),
            (
                "Every epoch is reshuffled: the order is a permutation seeded with "
                "seed + epoch, which is what `DistributedSampler.set_epoch` does and "
                "what forgetting to call it breaks (every epoch the same order)."
            ),
            (
                "Validation metrics are reduced as sums of value x count and counts, "
                "never as a mean of per-rank means (which weights a short last shard "
                "wrongly); every rank reaches that collective."
            ),
            (
                "A parameter that gets no gradient in a step (a branch some batches "
                "skip) leaves DDP waiting for it and the ranks' collectives out of "
                "step; the loop names such parameters before the next collective and "
                "points at `--find-unused-parameters`, instead of DDP's long error "
                "one step later."
            ),
            (
                "Decisions are collective: a stop signal may reach the ranks at "
                "different steps, so the stop flags are all-reduced before anyone "
                "acts; otherwise one rank leaves while the others wait in an "
                "all-reduce forever."
            ),
            (
                "One writer: only global rank 0 writes checkpoints and logs; the RNG "
                "states of all ranks are gathered into the checkpoint, so a resumed "
                "run continues every rank's random stream."
            ),
            (
                "Teardown: `destroy_process_group()` on exit and on error, a barrier "
                "before the ranks read the best.pt that rank 0 wrote, and a bounded "
                "timeout so that a dead rank fails the job instead of hanging it."
            ),
        ),
        usage=("torchrun --standalone --nproc_per_node=2 train.py --batch-size 128",),
        launch=(
            (
                "torchrun --nnodes=2 --nproc_per_node=8 --node_rank=0 "
                "--rdzv_backend=c10d --rdzv_endpoint=HOST_OF_NODE_0:29500 train.py"
            ),
        ),
    ),
    "amp": Explanation(
        title="Mixed precision (torch.autocast; GradScaler for fp16 only)",
        problem=(
            "Matrix multiplications in bf16 or fp16 are several times faster than fp32 "
            "on GPUs with tensor cores and halve activation memory. fp16 has a small "
            "range, so gradients need loss scaling or small ones underflow to zero; "
            "bf16 has fp32's range and needs none. On a CPU without bf16 matrix units "
            "autocast is emulated and slower than fp32."
        ),
        where=(
            Location(
                "train.py",
                "pick_amp_dtype",
                "`--amp-dtype auto`: bf16 on CUDA GPUs that support it, fp16 on older "
                "ones, fp32 on CPUs without native bf16 (said in one line)",
            ),
            Location(
                "train.py",
                "set_up",
                "the autocast context and GradScaler(enabled=fp16)",
            ),
            Location(
                "train.py",
                "forward_backward",
                "autocast around forward and loss; scale(loss).backward()",
            ),
            Location(
                "train.py",
                "optimizer_step",
                "unscale_, then the step through the scaler, and update",
            ),
            Location(
                "train.py",
                "save_checkpoint",
                "the scaler's state in every checkpoint",
            ),
            Location(
                "train.py", "evaluate", "evaluation under the same autocast context"
            ),
        ),
        options=(
            (
                "--amp-dtype",
                (
                    "auto | bf16 | fp16 | off (auto: bf16 where fast, fp16 on older "
                    "GPUs, off on CPUs without bf16 units)"
                ),
            ),
        ),
        traps=(
            (
                "The current API: `torch.autocast(device_type, dtype)` and "
                "`torch.amp.GradScaler(device)`; the deprecated `torch.cuda.amp` names "
                "are not used."
            ),
            (
                "Unscale before anything reads the gradients: "
                "`scaler.unscale_(optimizer)` comes before clipping and gradient "
                "norms; clipping scaled gradients clips nothing useful."
            ),
            (
                "A GradScaler only for fp16: it is created with `enabled=` fp16, so "
                "bf16 and fp32 run the same code path with no-op scaling."
            ),
            "Resume restores the scaler: its scale factor is in every checkpoint.",
            (
                "An fp16 overflow is not a failure: GradScaler skips that step and "
                "lowers the scale (with `--clip`, the inf gradient norm of such a step "
                "is not taken for divergence)."
            ),
            (
                "Mixed precision on a CPU can be a slowdown: `auto` trains in fp32 on "
                "CPUs without native bf16 units and says so; `--amp-dtype bf16` forces "
                "it."
            ),
        ),
        usage=("python train.py --amp-dtype bf16",),
    ),
    "clip": Explanation(
        title="Gradient clipping by norm or by value",
        problem=(
            "One bad batch can produce a huge gradient that throws the weights far "
            "from where training was going: loss spikes, then NaN. Clipping bounds the "
            "update, by global norm (all gradients rescaled together so that their L2 "
            "norm is at most the threshold) or by value (each element clamped). The "
            "pre-clip norm is also the first thing to look at when training is "
            "unstable, so it is logged."
        ),
        where=(
            Location(
                "train.py",
                "optimizer_step",
                "`clip_grad_norm_` (or an element-wise clamp) once "
                "per optimizer step, before `optimizer.step()`; the pre-clip norm is "
                "accumulated on the device and logged as grad_norm (mean per log "
                "interval)",
            ),
        ),
        options=(
            ("--clip-norm", "clip the global gradient norm to this (0: off)"),
            (
                "--clip-value",
                "clip each gradient element to +-this instead of by norm (0: off)",
            ),
        ),
        traps=(
            (
                "Clip after unscaling: with fp16 (`--amp`) clipping runs after "
                "`scaler.unscale_(optimizer)`; before it, the threshold would be "
                "compared with gradients multiplied by the loss scale."
            ),
            (
                "Once per optimizer step: with `--accumulate` the clip sees the summed "
                "gradients of the whole window, not each micro-batch."
            ),
            (
                "The logged norm is the pre-clip norm, kept on the device and read "
                "only every `--log-every` steps: no per-step host synchronisation."
            ),
            (
                "Clipping by value is done on the gradients that exist, by hand: "
                "`clip_grad_value_` fails when no parameter has a gradient."
            ),
        ),
        usage=("python train.py --clip-norm 0.5",),
    ),
    "accumulate": Explanation(
        title="Gradient accumulation",
        problem=(
            "The batch you want does not fit in memory. Accumulation runs K "
            "micro-batches forward and backward, letting their gradients add up, then "
            "takes one optimizer step: the update of a K times larger batch. Getting "
            "it exactly equal to the large batch needs care at the end of an epoch and "
            "under DDP."
        ),
        where=(
            Location(
                "train.py",
                "train_step",
                "window_size and last_of_window, the optimizer step only at a "
                "window's end",
            ),
            Location(
                "train.py",
                "forward_backward",
                "the loss divided by the size of the window actually used",
            ),
            Location(
                "train.py",
                "set_up",
                "steps_per_epoch = ceil(batches / K)",
            ),
        ),
        options=(
            (
                "--accumulate-steps",
                "micro-batches per optimizer step (gradient accumulation)",
            ),
        ),
        traps=(
            (
                "Divide by the window actually used: the last window of an epoch may "
                "be shorter than K; its losses are divided by its real size, so that "
                "update is not too small (an open bug in a major framework)."
            ),
            (
                "The schedule counts optimizer steps: steps per epoch = ceil(batches / "
                "K); warmup, cosine decay, `--max-steps`, `--log-every` and "
                "`--ckpt-every` all count optimizer steps, not micro-batches."
            ),
            (
                "With `--ddp`: `no_sync()` covers the forward and the backward of "
                "every non-final micro-batch, so gradients are all-reduced once per "
                "window instead of K times; the final micro-batch syncs."
            ),
            (
                "With `--ddp --compile`: `no_sync()` is called on the DDP module "
                "(ddp_model), which the compiled wrapper would hide."
            ),
        ),
        usage=("python train.py --accumulate-steps 4 --batch-size 64",),
    ),
    "early-stopping": Explanation(
        title="Early stopping",
        problem=(
            "Training on after validation has stopped improving wastes compute. Early "
            "stopping ends the run after `--patience` validations without an "
            "improvement larger than `--min-delta` in the monitored metric "
            "(`--monitor-metric`, `--monitor-mode`); best.pt keeps the best weights "
            "either way, and the final test uses them."
        ),
        where=(
            Location(
                "train.py",
                "validate",
                "counts validations in a row without improvement",
            ),
            Location(
                "train.py",
                "end_epoch",
                "stop once the count reaches --patience, not "
                "before --min-epochs",
            ),
            Location(
                "train.py",
                "TrainState",
                "bad_validations, saved in every checkpoint",
            ),
        ),
        options=(
            ("--patience", "validations without improvement before stopping"),
            (
                "--min-delta",
                "smallest change of the monitored metric that counts as improvement",
            ),
        ),
        traps=(
            (
                "All ranks decide together: validation metrics are all-reduced before "
                "the decision, so every rank computes the same one and none leaves "
                "while the others wait in a collective."
            ),
            (
                "The count survives a resume: it is part of the training state in the "
                "checkpoint, so a resumed run stops where an uninterrupted one would."
            ),
            "`--min-epochs` is honoured: no stop before it.",
        ),
        usage=("python train.py --patience 2 --min-delta 0.001",),
    ),
    "compile": Explanation(
        title="torch.compile",
        problem=(
            "`torch.compile` turns the model into fused kernels: often faster "
            "training, for some compile time at start. But the compiled wrapper "
            "renames every entry of `state_dict()` (an `_orig_mod.` prefix) and hides "
            "the methods of the module it wraps, such as DDP's `no_sync()`."
        ),
        where=(
            Location(
                "train.py",
                "set_up",
                "`model = torch.compile(model, mode=...)` after the DDP wrap; "
                "raw_model, the plain module, is kept for checkpoints and evaluation",
            ),
        ),
        options=(
            (
                "--compile-mode",
                "torch.compile mode: default | reduce-overhead | max-autotune",
            ),
        ),
        traps=(
            (
                "Checkpoints hold plain weights: they are saved from the plain module, "
                "so they have no `_orig_mod.` (or `module.`) prefixes, and "
                "`load_model` or a project without `--compile` loads them."
            ),
            (
                "DDP is compiled, not the other way round, and `no_sync()` is reached "
                "through the DDP module itself."
            ),
            (
                "Evaluation runs the plain module: switching to eval mode and no-grad "
                "does not trigger recompilation."
            ),
        ),
        usage=("python train.py --compile-mode max-autotune",),
    ),
    "slurm": Explanation(
        title="SLURM batch scripts, requeue on preemption with auto-resume, sweeps",
        problem=(
            "On a cluster a job has a time limit and may be preempted. A training run "
            "longer than the limit must save, put itself back in the queue and "
            "continue where it stopped, without anyone watching; a sweep should be one "
            "job array with one run directory per configuration."
        ),
        where=(
            Location(
                "slurm/train.sbatch",
                None,
                "#SBATCH lines (nodes, tasks, CPUs, time, --requeue, "
                "--signal=USR1@180, --open-mode=append); srun starts one task per "
                "process; a run directory per job id; `--resume auto`",
            ),
            Location(
                "slurm/sweep.sbatch",
                None,
                "a job array: CONFIGS holds one set of train.py arguments per task; "
                "each task runs train.sbatch with its own run directory",
            ),
            Location(
                "train.py",
                "request_requeue",
                "the SIGUSR1 handler: it only sets a flag",
            ),
            Location(
                "train.py",
                "requeue_slurm_job",
                "`scontrol requeue` of this job (or array task), with a clear message "
                "when scontrol is missing",
            ),
            Location(
                "train.py",
                "train_epoch",
                "between steps: the requests checked (agreed by all ranks with --ddp)",
            ),
            Location(
                "train.py",
                "stop_early",
                "last.pt saved, the job requeued (by rank 0 with --ddp)",
            ),
        ),
        options=(),
        traps=(
            (
                "Signals: the handler only sets a flag; the loop acts at the next step "
                "boundary, where saving is safe."
            ),
            (
                "srun, not torchrun: torchrun forwards only INT, TERM, HUP and QUIT to "
                "its workers, so SLURM's SIGUSR1 would never reach train.py; srun "
                "starts one task per process and signals them all (with `--ddp`, ranks "
                "come from SLURM_PROCID, SLURM_LOCALID and SLURM_NTASKS)."
            ),
            (
                "Only rank 0 runs `scontrol requeue`, after all ranks agreed on the "
                "flag and saved; a missing scontrol is a clear message, not a crash."
            ),
            (
                "The requeued job keeps its id, hence its run directory, and resumes "
                "from its newest valid checkpoint (`--resume auto` skips a truncated "
                "file) with the full training state and RNG streams."
            ),
            (
                "The batch shell traps SIGTERM so that scancel does not cut train.py's "
                "last output; the log is appended across requeues; srun is given the "
                "CPUs per task again (SLURM 22.05 and later no longer pass them on)."
            ),
            (
                "`--signal=USR1@180` leaves time: SLURM checks time limits only about "
                "once a minute, and one step plus a save must fit after that."
            ),
        ),
        launch=(
            "sbatch slurm/train.sbatch --lr 1e-3",
            "sbatch slurm/sweep.sbatch --max-epochs 20",
        ),
    ),
    "tensorboard": Explanation(
        title="TensorBoard logging",
        problem=(
            "metrics.csv is always written; TensorBoard shows the same numbers as live "
            "curves, next to other runs."
        ),
        where=(
            Location(
                "train.py",
                "open_tensorboard",
                "imports torch.utils.tensorboard here only; None and one line when the "
                "package is missing",
            ),
            Location(
                "train.py",
                "log_row",
                "each float of a logged row becomes a scalar <split>/<name>",
            ),
            Location(
                "train.py",
                "finish",
                "the writer is closed at the end",
            ),
        ),
        options=(),
        traps=(
            (
                "Imported only with the flag, and a missing package costs one message, "
                "not the run: training goes on with metrics.csv."
            ),
            "One writer: only global rank 0 writes events.",
            (
                "Resume does not duplicate curves: `purge_step` drops the events a "
                "stopped run logged after its last checkpoint."
            ),
            (
                "No extra host synchronisation: it logs the rows already computed "
                "every `--log-every` steps."
            ),
        ),
        usage=("python train.py --max-epochs 2",),
        launch=("tensorboard --logdir runs",),
    ),
    "debug": Explanation(
        title="Debugging aids: per-layer gradient norms, NaN/inf report, shapes",
        problem=(
            "When training diverges or a model is wired wrong you want to know which "
            "layer's gradients blow up, which parameters got NaN or inf gradients, and "
            "what shapes flow through each module."
        ),
        where=(
            Location(
                "train.py",
                "print_module_shapes",
                "forward hooks print every module's input and output shapes for the "
                "first batch (rank 0)",
            ),
            Location(
                "train.py",
                "layer_grad_norms",
                "the gradient norm of each parameter, on the device, on log steps",
            ),
            Location(
                "train.py",
                "nonfinite_grads",
                "names of the parameters whose gradient holds NaN or inf",
            ),
            Location(
                "train.py",
                "optimizer_step",
                "the non-finite check, then skip the step or stop",
            ),
        ),
        options=(
            (
                "--on-nonfinite",
                "when a gradient is NaN/inf: skip (the optimizer step) | stop",
            ),
        ),
        traps=(
            (
                "The NaN/inf check runs after unscaling and before clipping: clipping "
                "by global norm would spread one layer's NaN to every layer and hide "
                "the culprit."
            ),
            (
                "Per-layer norms are computed on the device on log steps only and read "
                "there: no per-step host synchronisation."
            ),
            (
                "`skip` drops the whole update (all gradients cleared), so no "
                "parameter takes a partial step; `stop` raises with the parameter "
                "names. Under DDP the gradients checked are the all-reduced ones, so "
                "every rank decides the same."
            ),
        ),
        usage=("python train.py --on-nonfinite stop --log-every 10",),
    ),
    "multi-optim": Explanation(
        title="Several optimizers stepping at their own intervals (GANs and alike)",
        problem=(
            "A GAN's generator and discriminator, an actor and a critic: some models "
            "train two or more networks, each with its own optimizer, often at "
            "different intervals (the discriminator every step, the generator every "
            "k-th). A framework hides this behind 'return several optimizers' and a "
            "hook. Here the loop is written out: every optimizer has its own step "
            "counter, LR schedule, grad scaler, clipping and accumulation window, and "
            "backpropagates into its own sub-model only. The user's contract grows by "
            "one name, build_optimizers, and compute_loss gets the optimizer's name. "
            "The demo becomes a GAN learning a mixture of 8 Gaussians on a ring, "
            "judged by the modes its samples cover."
        ),
        where=(
            Location(
                "model.py",
                "build_optimizers",
                "the list of (name, optimizer, every_n_steps); name is the sub-model "
                "the optimizer trains (model.generator, model.discriminator)",
            ),
            Location(
                "model.py",
                "compute_loss",
                "the loss of one optimizer: discriminator (real vs generated points) "
                "or generator (the non-saturating loss)",
            ),
            Location(
                "model.py",
                "sample_quality",
                "the metrics: modes covered, share of samples near a mode, total "
                "variation distance to the true mixture over the modes",
            ),
            Location(
                "data.py",
                "build_datasets",
                "(point, latent) pairs drawn once from the data seed: evaluation "
                "draws no random numbers",
            ),
            Location(
                "train.py",
                "check_optimizers",
                "the contract checked at start: each optimizer holds exactly its "
                "sub-model's parameters, no parameter in two optimizers, intervals "
                ">= 1; the LR it was built with kept as the peak of its schedule",
            ),
            Location(
                "train.py",
                "train_step",
                "each optimizer due (every n-th step), in the listed order, runs "
                "forward_backward over the step's micro-batches (backward(inputs=its "
                "parameters)), then optimizer_step: its own schedule, unscale, clip, "
                "step, zero",
            ),
            Location(
                "train.py",
                "save_checkpoint",
                "every optimizer and scaler; per-optimizer step counters in TrainState",
            ),
            Location(
                "train.py",
                "evaluate",
                "validation and test run compute_loss for every optimizer's name and "
                "report all their metrics",
            ),
        ),
        options=(
            ("--n-modes", "Gaussians of the target mixture, evenly spaced on a ring"),
            ("--mode-std", "standard deviation of each Gaussian"),
            ("--latent-dim", "size of the generator's input noise"),
            ("--hidden", "width of the hidden layers of both networks"),
            (
                "--g-every",
                "step the generator on every N-th training step (the discriminator: "
                "every step)",
            ),
        ),
        traps=(
            (
                "Backward into the stepped optimizer's parameters only "
                "(`loss.backward(inputs=...)`): the generator's loss flows through the "
                "discriminator, and plain backward() would add it to the "
                "discriminator's gradients."
            ),
            (
                "An optimizer that is not due is not touched: no zero_grad, no step, "
                "no scaler update; its parameters and moments stay bit-identical."
            ),
            (
                "Each LR schedule runs on its own optimizer's step counter over the "
                "steps that optimizer will take (total // every), not on the global "
                "step."
            ),
            (
                "One GradScaler per optimizer with fp16: an overflow in one network's "
                "gradients skips only that network's step and lowers only its scale."
            ),
            (
                "With `--accumulate`, the step's micro-batches are kept until the "
                "window is complete, and each due optimizer runs over all of them in "
                "turn, its loss divided by the window actually used."
            ),
            (
                "With `--ddp`, each optimized sub-model has its own "
                "DistributedDataParallel and `syncing_only` puts the others under "
                "no_sync: only the stepped network's gradients are all-reduced, and a "
                "network that runs forward in another's step (the generator making "
                "samples for the discriminator) leaves no DDP waiting for gradients "
                "(no unused-parameter error)."
            ),
            (
                "Checkpoints and exact resume hold every optimizer, its step counter "
                "(its schedule's position) and its scaler."
            ),
        ),
        usage=(
            "python train.py",
            "python train.py --g-every 3 --max-epochs 2 --run-dir runs/g3",
        ),
    ),
}


def get_explanation(name: str) -> Explanation:
    """The explanation of feature ``name``; InvalidSpecError for an unknown name."""
    if name not in FEATURES_BY_NAME or name not in EXPLANATIONS:
        raise InvalidSpecError(
            f"unknown feature {name!r}; choose one of: {', '.join(EXPLANATIONS)}"
        )
    return EXPLANATIONS[name]


def _paragraph(text: str, indent: str = "  ", bullet: str = "") -> str:
    return textwrap.fill(
        text,
        width=88,
        initial_indent=indent + bullet,
        subsequent_indent=indent + " " * len(bullet),
        break_on_hyphens=False,
        break_long_words=False,
    )


def explanation_text(name: str) -> str:
    """The explanation of feature ``name`` as plain text for a terminal."""
    explanation = get_explanation(name)
    feature = FEATURES_BY_NAME[name]
    lines = [
        f"{name}: {explanation.title}",
        f"  {feature.help}",
        f"  scaffold new PATH {feature.flag}   |   scaffold add {name}",
        "",
        "The problem",
        _paragraph(explanation.problem),
        "",
        "Where the code lives",
    ]
    for location in explanation.where:
        place = location.file + (f", {location.name}" if location.name else "")
        lines += [f"  {place}", _paragraph(location.what, indent="      ")]
    lines += ["", "Options it adds to train.py"]
    for flag, meaning in explanation.options:
        lines += [f"  {flag}", _paragraph(meaning, indent="      ")]
    if not explanation.options:
        lines.append("  (none)")
    lines += ["", "Traps it avoids"]
    lines += [_paragraph(trap, bullet="- ") for trap in explanation.traps]
    if explanation.usage:
        lines += ["", "Try it (in the generated project)"]
        lines += [f"  {command}" for command in explanation.usage]
    if explanation.launch:
        lines += ["", "Launch (on a cluster, or a server)"]
        lines += [f"  {command}" for command in explanation.launch]
    return "\n".join(lines) + "\n"
