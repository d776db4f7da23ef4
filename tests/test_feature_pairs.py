"""Every pair of features runs, not only compiles: a --fast-dev-run (two batches of
each split, nothing written) of each pair's project with its own demo model.

Single-process, every pair: the runs of a shard share one Python process, so
torch is imported once per shard, not once per pair; a driver imports each
project's train.py afresh and calls its main. Under torchrun (two processes, gloo):
ddp with compile and with multi-optim, one launch each; ddp with every other
feature at once is tests/test_generated_runs.py's.
"""

import itertools
import subprocess
import sys

import pytest
from feature_sets import is_valid
from helpers import render, run_torchrun, train_env

from scaffold.features import FEATURES

pytest.importorskip("torch")

# every pair that can be one project (scaffold new refuses the others)
PAIRS = [p for p in itertools.combinations([f.name for f in FEATURES], 2) if is_valid(frozenset(p))]
CONFLICTING = {frozenset((f.name, other)) for f in FEATURES for other in f.conflicts}
SHARDS = 4  # pytest-xdist spreads them over its workers
# the compile pairs take most of the time (torch.compile on a CPU): one per shard
# at least, by dealing the pairs out in turn
SHARD_PAIRS = [PAIRS[i::SHARDS] for i in range(SHARDS)]

# Runs `main(["--fast-dev-run"])` of each project given, each with its own
# train/model/data modules; reports every failure, not only the first.
DRIVER = '''
import os
import sys
import traceback

failures = []
for project in sys.argv[1:]:
    os.chdir(project)
    sys.path.insert(0, project)
    for name in ("train", "train_utils", "model", "data"):
        sys.modules.pop(name, None)
    try:
        import train

        code = train.main(["--fast-dev-run"])
        if code:
            failures.append(f"{project}: main returned {code}")
    except BaseException:  # a one-line SystemExit is a failure here too
        failures.append(f"{project}:\\n{traceback.format_exc()}")
    finally:
        sys.path.remove(project)
    print(f"ran {project}", flush=True)
print("\\n".join(failures), file=sys.stderr, flush=True)
# as --fsdp's train.py ends: DTensor's caches keep gloo's worker threads alive
# into Python's shutdown, where one that frees a tensor aborts the process
os._exit(1 if failures else 0)
'''


@pytest.mark.parametrize("shard", range(SHARDS))
def test_a_fast_dev_run_of_every_pair_of_features(tmp_path, shard):
    pairs = SHARD_PAIRS[shard]
    projects = [render(tmp_path, pair, name="_".join(pair).replace("-", "_"), tiny=False)
                for pair in pairs]
    (tmp_path / "driver.py").write_text(DRIVER)
    result = subprocess.run(
        [sys.executable, str(tmp_path / "driver.py"), *map(str, projects)],
        cwd=tmp_path, capture_output=True, text=True, timeout=900, env=train_env(),
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    assert result.stdout.count("ran ") == len(pairs)
    # fast-dev-run writes nothing: no run directory in any project
    assert not [p for p in projects if (p / "runs").exists()]


def test_the_shards_hold_every_pair_once():
    assert sorted(p for shard in SHARD_PAIRS for p in shard) == sorted(PAIRS)
    assert len(PAIRS) + len(CONFLICTING) == len(FEATURES) * (len(FEATURES) - 1) // 2


# ddp with every feature but these runs under torchrun at once in
# tests/test_generated_runs.py (test_fast_dev_run_of_every_feature_under_torchrun);
# these change what the ranks do (compiled graphs, one DDP per sub-model), so each
# gets its own launch: a torchrun launch costs far more than the run itself
OWN_LAUNCH = ("compile", "multi-optim")


@pytest.mark.parametrize("pair", [("ddp", f) for f in OWN_LAUNCH], ids="+".join)
def test_a_fast_dev_run_of_ddp_pairs_under_torchrun(tmp_path, pair):
    project = render(tmp_path, pair, tiny=False)
    result = run_torchrun(project, 2, "--fast-dev-run", "--dist-timeout-s", "60",
                          tiny_defaults=False, timeout=600)
    assert "world size 2" in result.stdout
    assert not (project / "runs").exists()
