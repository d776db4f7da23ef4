"""benchmarks/gpu_gpt.py and its workload (benchmarks/gpt2), at a toy size on a CPU.

The benchmark is for one GPU and a 124 M-parameter model; the same script runs
here with two layers and a short context, eager only, so that it cannot rot:
every program it compares trains, and its output has every row and figure (not
their values: timings on a shared CPU mean nothing). The workload's own promises
are checked directly: the token file format, the windows, GPT-2 small's size and
the FLOPs formula that MFU uses.
"""

import ast
import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers import train_env

torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parent.parent
WORKLOAD = ROOT / "benchmarks" / "gpt2"
TOY = ["--device", "cpu", "--layers", "2", "--d-model", "32", "--heads", "2",
       "--context", "32", "--vocab-size", "256", "--batch-size", "4", "--steps", "6",
       "--warmup", "2", "--log-every", "2", "--rounds", "1", "--eager-only"]
ROWS = ["hand-written, eager", "generated, eager", "generated + ema",
        "generated + accumulate 2", "generated + fsdp (1 process)"]


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"gpt2_{name}", WORKLOAD / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(WORKLOAD))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(WORKLOAD))
    return module


@pytest.mark.slow
def test_the_benchmark_runs_every_program_at_a_toy_size(tmp_path):
    out, md = tmp_path / "gpt.json", tmp_path / "gpt.md"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_gpt.py"), *TOY, "--json", str(out),
         "--markdown", str(md), "--profile", str(tmp_path / "profiles")],
        cwd=ROOT, capture_output=True, text=True, timeout=600, env=train_env())
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    result = json.loads(out.read_text())
    assert result["device"] == "CPU" and result["torch"] == torch.__version__
    # written after every run; the last write is the whole benchmark's
    assert result["done"] and not any("partial" in note for note in result["notes"])
    assert [row["program"] for row in result["rows"]] == ROWS
    for row in result["rows"]:
        assert row["runs"] == 1, row
        for key in ("tokens_per_s", "step_p50_ms", "step_p90_ms", "first_step_s"):
            assert math.isfinite(row[key]) and row[key] > 0, (key, row)
        assert row["step_p90_ms"] >= row["step_p50_ms"], row
        # no GPU: no peak FLOPs to divide by, no CUDA memory counter
        assert row["mfu"] is None and row["peak_memory_gb"] is None, row
    # the one target that an eager CPU run can judge, as a ratio of its rows
    (target,) = result["targets"]
    rows = {row["program"]: row for row in result["rows"]}
    ratio = rows["generated, eager"]["tokens_per_s"] / rows["hand-written, eager"]["tokens_per_s"]
    assert target["target"].startswith("generated >= 0.98 x hand-written tokens/s (eager)")
    assert target["value"] == f"{ratio:.3f}" and target["met"] == (ratio >= 0.98)
    text = md.read_text()
    assert text.startswith("## gpu_gpt.py")
    for name in ROWS:
        assert f"| {name} | 1 |" in text, name
    assert "Not a GPU run" in text
    # eager-only: each base program's profile, of the steps after the window
    profiles = sorted(p.name for p in (tmp_path / "profiles").iterdir())
    assert profiles == ["generated_eager.txt", "hand-written_eager.txt"]
    assert "Optimizer.step" in (tmp_path / "profiles" / "generated_eager.txt").read_text()
    # and where the time goes, from those profiles, in the section
    for name in ROWS[:2]:
        profile = rows[name]["profile"]
        assert profile["busy_us"] > 0 and profile["span_us"] > 0 and profile["top"], profile
        assert f"- {name}: busy " in text, name
    assert all(rows[name]["profile"] is None for name in ROWS[2:])


def test_the_token_file_is_memory_mapped_in_windows(tmp_path):
    write_tokens = load("make_tokens").write_tokens
    data = load("data")
    path = write_tokens(tmp_path / "tokens.bin", 10_000, vocab_size=300, seed=3)
    assert path.stat().st_size == 2 * 10_000  # uint16 ids, no header
    cfg = SimpleNamespace(tokens_file=str(path), vocab_size=300, context=16)
    train, val, test = data.build_datasets(cfg)
    tokens = torch.from_file(str(path), size=10_000, dtype=torch.uint16).long()
    assert int(tokens.max()) < 300
    # in order: 90 / 5 / 5 %, each window context + 1 tokens, labels shifted by one
    assert (len(train), len(val), len(test)) == ((9000 - 1) // 16, (500 - 1) // 16, (500 - 1) // 16)
    x, y = train[5]
    assert x.dtype == y.dtype == torch.int64 and x.shape == y.shape == (16,)
    assert torch.equal(x, tokens[80:96]) and torch.equal(y, tokens[81:97])
    vx, _ = val[0]
    assert torch.equal(vx, tokens[9000:9016])
    with pytest.raises(IndexError):
        train[len(train)]
    # a vocabulary above 16 bits: int32 ids
    wide = write_tokens(tmp_path / "wide.bin", 1000, vocab_size=70_000)
    assert wide.stat().st_size == 4 * 1000
    cfg = SimpleNamespace(tokens_file=str(wide), vocab_size=70_000, context=8)
    assert len(data.build_datasets(cfg)[0]) == (900 - 1) // 8


def test_the_workload_is_gpt2_small_with_its_flops(tmp_path):
    model = load("model")
    cfg = SimpleNamespace(vocab_size=50304, context=1024, n_layers=12, d_model=768,
                          n_heads=12, dropout=0.0)
    with torch.device("meta"):
        gpt = model.build_model(cfg)
    assert gpt.lm_head.weight is gpt.tok_emb.weight  # tied
    n = sum(p.numel() for p in gpt.parameters())  # the tied matrix once
    assert 120e6 < n < 130e6, n
    # 6N + 12 L H Q T, N without the position embedding (a lookup)
    expected = 6 * (n - 1024 * 768) + 12 * 12 * 12 * 64 * 1024
    assert gpt.flops_per_token() == expected
    assert gpt.flops_per_sample() == expected * 1024 and gpt.tokens_per_sample() == 1024
    # a real forward at a toy size: the loss of a fresh model is about log(vocab)
    small = SimpleNamespace(vocab_size=64, context=8, n_layers=2, d_model=16, n_heads=2,
                            dropout=0.0)
    torch.manual_seed(0)
    toy = model.build_model(small)
    ids = torch.randint(0, 64, (3, 8))
    loss, metrics = model.compute_loss(toy, (ids, ids))
    assert metrics == {} and loss.dim() == 0
    assert abs(loss.item() - math.log(64)) < 0.5
    assert toy(ids).shape == (3, 8, 64)


def test_the_workload_needs_torch_only():
    for name in ("model.py", "data.py"):
        imported = set()
        for node in ast.walk(ast.parse((WORKLOAD / name).read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                imported.add(node.module.split(".")[0])
        assert imported <= {"math", "os", "torch"}, (name, imported)


def test_the_config_fields_the_model_asks_for_are_those_the_benchmark_adds():
    spec = importlib.util.spec_from_file_location("gpu_gpt", ROOT / "benchmarks" / "gpu_gpt.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    docs = (WORKLOAD / "model.py").read_text()
    for line in bench.CONFIG_FIELDS.splitlines():
        assert line in docs, line
