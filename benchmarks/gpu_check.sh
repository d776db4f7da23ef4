#!/usr/bin/env bash
# The GPU checks in one command, for a machine with a CUDA GPU (one H200: about
# 4-5 minutes before tests/gpu/test_host_sync.py came, not timed since; at most 8):
#
#     bash benchmarks/gpu_check.sh          # from the repository root
#     bash benchmarks/gpu_check.sh gpt      # the GPT-2-small benchmark instead (at most 8 min)
#
# Stages, each under its own time limit (seconds, changed with the variable named):
#   1. setup        GPU_CHECK_SETUP_S=45   what tests/gpu needs, never torch: the
#      requirements of '.[test]' that are missing, except torch (pip; wheels in
#      .whl/, if any, are installed first, without an index), then this
#      package (editable, --no-deps); the working tree is on PYTHONPATH in any case
#   2. environment  GPU_CHECK_ENV_S=25     nvidia-smi; Python, torch, CUDA, cuDNN,
#      NCCL, the GPU; the versions of the test tools. No CUDA GPU: stops here
#   3. tests        GPU_CHECK_TESTS_S=270  python -m pytest tests/gpu -q -x
#      (-n GPU_CHECK_WORKERS=4 with pytest-xdist; --timeout GPU_CHECK_TEST_TIMEOUT=200
#      per test with pytest-timeout); a skipped test counts as a failure here
#   4. benchmark    GPU_CHECK_BENCH_S=120  benchmarks/gpu_demo.py, short
#      (GPU_CHECK_STEPS=70, GPU_CHECK_WARMUP=30, GPU_CHECK_LOG_EVERY=10); its
#      Markdown section replaces the GPU section of benchmarks/RESULTS.md, the
#      other sections stay as they are
# With `gpt`, stages 1 and 2, then instead of 3 and 4:
#   3. gpt          GPU_CHECK_GPT_S=400    benchmarks/gpu_gpt.py (a 124 M-parameter
#      GPT: the generated loop against a hand-written one, eager and compiled,
#      and --ema, --fsdp, --accumulate), starting no second round of runs after
#      GPU_CHECK_GPT_BUDGET_S=270 s, with torch.profiler tables of the compiled
#      programs; its section (what it measured, even when stopped by the limit)
#      replaces gpu_gpt.py's in benchmarks/RESULTS.md
# A failed stage does not stop the later ones (except 1 and 2: without the tools
# or a GPU nothing later can run); the exit status is 1 if any stage failed.
# Everything that matters is written to $OUT when it is set (the device runner
# returns the files under it), else to ${TMPDIR:-/tmp}/gpu_check: gpu_check.log
# (all of the output), environment.txt, gpu-tests.log, gpu-tests.xml (JUnit),
# gpu_demo.log, gpu_demo.md and RESULTS.md; with `gpt`: gpu_gpt.log, gpu_gpt.md,
# gpu_gpt.json, profiles/ and RESULTS.md.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
ART=${OUT:-${TMPDIR:-/tmp}/gpu_check}
mkdir -p "$ART"
SITE=${TMPDIR:-/tmp}/gpu_check_site  # where carried wheels are unpacked

exec > >(tee "$ART/gpu_check.log") 2>&1
TEE_PID=$!
finish() {
    local rc=$?
    exec 1>&- 2>&-
    wait "$TEE_PID" 2>/dev/null || true
    exit "$rc"
}
trap finish EXIT

# the Python that holds torch: $PYTHON, else python, else python3
PY=${PYTHON:-}
if [[ -z $PY ]]; then
    for candidate in python python3; do
        if command -v "$candidate" >/dev/null && "$candidate" -c "import torch" 2>/dev/null; then
            PY=$candidate
            break
        fi
    done
fi
if [[ -z $PY ]]; then
    echo "gpu_check: no python that imports torch (set PYTHON=...); torch is never installed here"
    exit 1
fi
export PY REPO ART SITE
export PYTHONPATH="$REPO:$SITE${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

FAILED=()
# stage NAME SECONDS LOG COMMAND...: run COMMAND under `timeout`, its output also
# in $ART/LOG (LOG "-": none); record a failure, never stop the script
stage() {
    local name=$1 limit=$2 log=$3 rc
    shift 3
    echo
    echo "=== $name (limit ${limit}s) ==="
    local start=$SECONDS
    set +e
    if [[ $log == - ]]; then
        timeout --kill-after=5 "$limit" "$@"
        rc=$?
    else
        timeout --kill-after=5 "$limit" "$@" 2>&1 | tee "$ART/$log"
        rc=${PIPESTATUS[0]}
    fi
    set -e
    if ((rc == 124 || rc == 137)); then
        echo "=== $name: TIMED OUT after ${limit}s"
    fi
    echo "=== $name: exit $rc after $((SECONDS - start))s"
    if ((rc != 0)); then
        FAILED+=("$name (exit $rc)")
    fi
    return 0
}

# --- 1. setup: a function run in its own bash, so that `timeout` can end it
setup() {
    set -euo pipefail
    # carried wheels (no package index on the GPU machine): never torch itself
    local wheels=()
    for wheel in .whl/*.whl; do
        if [[ -e $wheel && $(basename "$wheel") != torch-* ]]; then
            wheels+=("$wheel")
        fi
    done
    if ((${#wheels[@]})); then
        echo "installing ${#wheels[@]} carried wheels into $SITE"
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
            --upgrade --target "$SITE" "${wheels[@]}"
    fi
    # the requirements of '.[test]' that are not installed, torch left out
    local missing=()
    mapfile -t missing < <("$PY" - <<'EOF'
import importlib.metadata as metadata
import re
import tomllib

project = tomllib.load(open("pyproject.toml", "rb"))["project"]
for requirement in project["dependencies"] + project["optional-dependencies"]["test"]:
    name = re.match(r"[A-Za-z0-9_.-]+", requirement).group(0)
    if name.lower() == "torch":
        continue
    try:
        metadata.distribution(name)
    except metadata.PackageNotFoundError:
        print(requirement)
EOF
    )
    local constraint
    constraint=$(mktemp)
    # pip may never replace the installed (CUDA) torch
    "$PY" -c "import torch; print(f'torch=={torch.__version__}')" >"$constraint"
    local pip=("$PY" -m pip install -q --retries 0 --timeout 10 --constraint "$constraint")
    if ((${#missing[@]})); then
        echo "missing requirements of .[test] (torch left out): ${missing[*]}"
        if ! "${pip[@]}" "${missing[@]}"; then
            echo "pip could not install them together; one at a time:"
            for requirement in "${missing[@]}"; do
                "${pip[@]}" "$requirement" || echo "  not installed: $requirement"
            done
        fi
    else
        echo "every requirement of .[test] but torch is installed"
    fi
    # the package itself (the working tree is on PYTHONPATH anyway)
    "$PY" -m pip install -q --no-deps --no-build-isolation -e . ||
        echo "editable install failed; using the working tree through PYTHONPATH"
    rm -f "$constraint"
    # what tests/gpu cannot do without (black is only for the test suite's
    # formatting checks: generating a project never runs it)
    "$PY" -c "import jinja2, pytest" || {
        echo "gpu_check: jinja2 and pytest are needed; carry their wheels in .whl/"
        return 1
    }
    "$PY" -c "import scaffold, sys; print('scaffold from', scaffold.__file__)"
}

# --- 2. environment
environment() {
    set -uo pipefail
    date -u +"%Y-%m-%d %H:%M UTC"
    nvidia-smi || echo "nvidia-smi failed (exit $?)"
    "$PY" - <<'EOF'
import importlib.metadata as metadata
import os
import platform
import sys

import torch

print(f"Python {platform.python_version()} ({sys.executable}), {os.cpu_count()} CPUs")
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, "
      f"cuDNN {torch.backends.cudnn.version()}")
versions = []
for name in ("jinja2", "black", "pytest", "pytest-xdist", "pytest-timeout", "tensorboard"):
    try:
        versions.append(f"{name} {metadata.version(name)}")
    except metadata.PackageNotFoundError:
        versions.append(f"{name} missing")
print(", ".join(versions))
if not torch.cuda.is_available():
    sys.exit("torch sees no CUDA GPU: nothing to check here")
try:
    nccl = ".".join(map(str, torch.cuda.nccl.version()))
except Exception as exc:  # a torch built without NCCL
    nccl = f"unknown ({type(exc).__name__})"
print(f"NCCL {nccl}; {torch.cuda.device_count()} GPU(s)")
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    print(f"cuda:{i}: {p.name}, capability {p.major}.{p.minor}, "
          f"{p.total_memory / 2**30:.0f} GiB, {p.multi_processor_count} SMs, "
          f"bf16 {torch.cuda.is_bf16_supported()}")
EOF
}

# put_section FILE HEADING...: FILE's Markdown section into benchmarks/RESULTS.md,
# in place of the section whose heading starts with one of HEADING...
put_section() {
    "$PY" - benchmarks/RESULTS.md "$@" <<'EOF'
"""Put the new section where the old one (a heading given) was, or at the end;
keep the rest."""
import datetime
import os
import platform
import sys
from pathlib import Path

results, section_file = Path(sys.argv[1]), Path(sys.argv[2])
headings = tuple(sys.argv[3:])
section = section_file.read_text().rstrip("\n").split("\n")
cpu = next((line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")), platform.machine())
now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
note = (f"Written by `bash benchmarks/gpu_check.sh` on {now}, on a machine with "
        f"{cpu} ({os.cpu_count()} cores), not the one the header names"
        + os.environ.get("SECTION_NOTE", ": a short check run, its figures are rough."))
section = "\n".join([section[0], "", note, *section[1:]]) + "\n"

text = results.read_text() if results.exists() else "# Benchmark results\n"
lines = text.split("\n")
start = next((i for i, line in enumerate(lines) if line.startswith(headings)), None)
if start is None:
    text = text.rstrip("\n") + "\n\n" + section
else:
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")),
               len(lines))
    before = "\n".join(lines[:start]) + "\n" if start else ""
    after = "\n".join(lines[end:])
    text = before + section + ("\n" + after if after else "")
tmp = results.with_name(results.name + ".tmp")
tmp.write_text(text)
os.replace(tmp, results)
print(f"wrote the section {section.split(chr(10))[0]!r} of {results}")
EOF
}

# --- 4. benchmark: gpu_demo.py's section into benchmarks/RESULTS.md
benchmark() {
    set -euo pipefail
    "$PY" benchmarks/gpu_demo.py --device cuda --steps "$STEPS" --warmup "$WARMUP" \
        --log-every "$LOG_EVERY" --markdown "$ART/gpu_demo.md"
    put_section "$ART/gpu_demo.md" "## gpu_demo.py" "## The demo with --amp (bf16) and --compile"
    cp benchmarks/RESULTS.md "$ART/RESULTS.md"
}

# --- 3 (gpt). gpu_gpt.py's section into benchmarks/RESULTS.md
gpt() {
    set -uo pipefail
    local rc=0
    rm -f "$ART/gpu_gpt.md" "$ART/gpu_gpt.json"
    # its own limit, inside the stage's: what it measured before a timeout (it
    # writes its section after every run) still goes into RESULTS.md
    timeout --kill-after=5 "$GPT_S" "$PY" benchmarks/gpu_gpt.py --device cuda \
        --budget-s "$GPT_BUDGET_S" --markdown "$ART/gpu_gpt.md" --json "$ART/gpu_gpt.json" \
        --profile "$ART/profiles" || rc=$?
    if [[ -s $ART/gpu_gpt.md ]]; then
        SECTION_NOTE="." put_section "$ART/gpu_gpt.md" "## gpu_gpt.py"
        cp benchmarks/RESULTS.md "$ART/RESULTS.md"
    fi
    return "$rc"
}

export -f setup environment put_section benchmark gpt
export STEPS=${GPU_CHECK_STEPS:-70} WARMUP=${GPU_CHECK_WARMUP:-30}
export LOG_EVERY=${GPU_CHECK_LOG_EVERY:-10}
export GPT_BUDGET_S=${GPU_CHECK_GPT_BUDGET_S:-270}
GPT_STAGE_S=${GPU_CHECK_GPT_S:-400}
export GPT_S=$((GPT_STAGE_S - 15))  # gpu_gpt.py's own limit, inside the stage's
MODE=${1:-checks}
if [[ $MODE != checks && $MODE != gpt ]]; then
    echo "usage: bash benchmarks/gpu_check.sh [gpt]"
    exit 2
fi

echo "gpu_check: $REPO with $PY; files in $ART"
stage setup "${GPU_CHECK_SETUP_S:-45}" - bash -c setup
if ((${#FAILED[@]} == 0)); then
    stage environment "${GPU_CHECK_ENV_S:-25}" environment.txt bash -c environment
fi
if ((${#FAILED[@]} == 0)) && [[ $MODE == gpt ]]; then
    stage gpt "$GPT_STAGE_S" gpu_gpt.log bash -c gpt
elif ((${#FAILED[@]} == 0)); then
    pytest_args=(-m pytest tests/gpu -q -x -rfEs -p no:cacheprovider
                 --junitxml "$ART/gpu-tests.xml")
    if "$PY" -c "import xdist" 2>/dev/null; then
        pytest_args+=(-n "${GPU_CHECK_WORKERS:-4}")
    fi
    if "$PY" -c "import pytest_timeout" 2>/dev/null; then
        pytest_args+=(--timeout "${GPU_CHECK_TEST_TIMEOUT:-200}")
    fi
    rm -f "$ART/gpu-tests.xml"  # a report from an earlier run is no answer
    stage tests "${GPU_CHECK_TESTS_S:-270}" gpu-tests.log "$PY" "${pytest_args[@]}"
    # on a GPU machine every test runs: a skip means the tests saw no GPU
    if [[ -f $ART/gpu-tests.xml ]]; then
        skipped=$("$PY" -c "import sys, xml.etree.ElementTree as E
root = E.parse(sys.argv[1]).getroot()
print(sum(int(s.get('skipped', 0)) for s in root.iter('testsuite')))" "$ART/gpu-tests.xml") ||
            skipped=0
        if ((skipped > 0)); then
            echo "=== tests: $skipped skipped on a GPU machine"
            FAILED+=("tests ($skipped skipped)")
        fi
    fi
    stage benchmark "${GPU_CHECK_BENCH_S:-120}" gpu_demo.log bash -c benchmark
fi

echo
if ((${#FAILED[@]})); then
    echo "gpu_check: FAILED: ${FAILED[*]} (files in $ART)"
    exit 1
fi
echo "gpu_check: all stages passed in ${SECONDS}s (files in $ART)"
