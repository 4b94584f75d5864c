#!/usr/bin/env bash
# One prepared command for a GPU machine without internet: install offline, check, run.
#
#   bash benchmarks/gpu_run.sh PHASE [PHASE ...]
#
# PHASE (each time-boxed; what it writes lands in $OUT, default results/gpu_run):
#   install   pip install --no-index from wheelhouse/ (built where PyPI is reachable:
#             `python -m latentebsd.wheelhouse --out wheelhouse --python-version 3.12
#             --have node.txt`), into the Python that holds the node's torch; skipped
#             when the project and its libraries already import
#   check     benchmarks/gpu_check.py (training / encode / decode speed, bf16, the
#             paper's learning rate with and without our stabilisers)           CHECK_S
#   overlay   the GPU overlay (config/gpu.yaml) up to its eight trained models, and
#             the validation curves of every model, also of a run cut short   OVERLAY_S
#   default   the README's main job, cold (empty numba cache), and its stage times
#                                                                               DEFAULT_S
#   study     the GPU overlay's whole main job (Table 1, detection, figures)     STUDY_S
# Every phase works in its own copy of the workflow under /tmp and leaves a .tgz of
# its logs and tables in $OUT (the device tool brings back at most 8 files).
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
OUT=${OUT:-$REPO/results/gpu_run}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
T0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - T0 )) s] $*" | tee -a "$OUT/gpu_run.log"; }

workflow_copy() {  # a fresh copy of the workflow files in $1
    rm -rf "$1" && mkdir -p "$1"
    cp -r "$REPO"/{workflow,config,profiles} "$1"/
}

pack() {  # pack NAME DIR PATHS...: a .tgz of what exists of PATHS under DIR
    local name=$1 dir=$2; shift 2
    (cd "$dir" && tar czf "$OUT/$name.tgz" --ignore-failed-read "$@" 2>/dev/null)
}

install() {
    if [ -z "${FORCE_INSTALL:-}" ] && $PY -c "import latentebsd, snakemake, kikuchipy, pyebsdindex, orix" 2>/dev/null; then
        stamp "install: already importable"
        return 0
    fi
    stamp "install: $(ls wheelhouse/*.whl | wc -l) wheels, no index"
    $PY -m pip install -q --no-index --no-cache-dir --find-links wheelhouse latentebsd \
        > "$OUT/install.log" 2>&1 || { stamp "install FAILED"; tail -20 "$OUT/install.log"; exit 3; }
    stamp "install: done ($($PY -c 'import latentebsd; print(latentebsd.__file__)'))"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$OUT/gpu_run.log"
}

check() {
    stamp "check: benchmarks/gpu_check.py"
    timeout "${CHECK_S:-220}" $PY benchmarks/gpu_check.py --out "$OUT/gpu_check" \
        --budget-s "$(( ${CHECK_S:-220} - 30 ))" --combos fp32-eager,bf16-eager --n-encode 50000 \
        > "$OUT/gpu_check.log" 2>&1
    stamp "check: exit $? ($(grep -h 'checks passed' "$OUT/gpu_check.log"))"
    pack gpu_check "$OUT" gpu_check gpu_check.log && rm -rf "$OUT/gpu_check"
}

curves() {  # validation / training L2 per epoch of every model in $1, from its losses or checkpoint
    $PY - "$1" <<'EOF'
import json, sys
from pathlib import Path
import pandas as pd, torch
rows = []
for d in sorted(Path(sys.argv[1], "results/models").glob("*/")):
    csv, ckpt = d / "losses.csv", d / "checkpoint.pt"
    if csv.exists():
        f = pd.read_csv(csv)
        f = f[f["level"] == "epoch"]
        rows += [dict(variant=d.name, source="losses.csv", **r) for r in f.to_dict("records")]
    elif ckpt.exists():
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        cols = ["iteration", "epoch", "split", "n", "l2", "kl", "contrastive", "loss"]
        rows += [dict(variant=d.name, source="checkpoint", **dict(zip(cols, r)))
                 for r in json.loads(state["epoch_log"])]
frame = pd.DataFrame(rows)
frame.to_csv(Path(sys.argv[1], "curves.csv"), index=False)
if len(frame):
    val = frame[frame["split"] == "val"]
    for v, g in val.groupby("variant"):
        l2 = g["l2"].to_numpy()
        print(f"{v}: {len(l2)} epochs, val L2 {l2[0]:.4g} -> {l2[-1]:.4g}"
              + (f", last 10 epochs {100 * (l2[-1] / l2[-11] - 1):+.1f} %" if len(l2) > 10 else ""))
EOF
}

overlay() {
    local W=/tmp/latentebsd-overlay
    workflow_copy "$W"
    stamp "overlay: config/gpu.yaml up to the trained models (time box ${OVERLAY_S:-240} s)"
    (cd "$W" && timeout "${OVERLAY_S:-240}" $PY -m snakemake results/models/losses_all.png \
        --cores all --resources gpu=1 --configfile config/config.yaml config/gpu.yaml \
        > "$W/snakemake.log" 2>&1)
    stamp "overlay: exit $?"
    curves "$W" | tee -a "$OUT/gpu_run.log"
    nvidia-smi --query-gpu=memory.used --format=csv,noheader >> "$OUT/gpu_run.log" 2>&1
    pack overlay "$W" snakemake.log curves.csv logs benchmarks/out results/models/losses_all.png \
        $(cd "$W" && ls results/models/*/losses.csv results/models/*/losses.png 2>/dev/null)
}

main_job() {  # main_job NAME SECONDS [snakemake args]: a cold run of the workflow
    local name=$1 seconds=$2; shift 2
    local W=/tmp/latentebsd-$name
    workflow_copy "$W"
    export LATENTEBSD_NUMBA_CACHE_DIR=$(mktemp -d)  # cold: nothing compiled yet
    stamp "$name: snakemake --cores all --resources gpu=1 $* (time box $seconds s, cold numba cache)"
    local t=$(date +%s)
    (cd "$W" && timeout "$seconds" $PY -m snakemake --cores all --resources gpu=1 "$@" \
        > "$W/snakemake.log" 2>&1)
    local rc=$?
    stamp "$name: exit $rc after $(( $(date +%s) - t )) s; $(grep -c 'Finished jobid' "$W/snakemake.log") jobs finished"
    $PY benchmarks/stage_times.py "$(ls -t "$W"/.snakemake/log/*.snakemake.log | head -1)" \
        --cores "$(nproc)" > "$W/stage_times.md" 2>&1
    head -30 "$W/stage_times.md" | tee -a "$OUT/gpu_run.log"
    [ "$name" = study ] && curves "$W" | tee -a "$OUT/gpu_run.log"
    pack "$name" "$W" snakemake.log stage_times.md logs benchmarks/out results/evaluation/table1.md \
        results/evaluation/table1.csv results/evaluation/trends.md results/benchmark/detection.md \
        results/benchmark/detection.csv results/benchmark/detection_limits.md \
        results/benchmark/detection_limits.csv results/models/losses_all.png curves.csv
    unset LATENTEBSD_NUMBA_CACHE_DIR
}

[ $# -gt 0 ] || { sed -n 2,20p "$0"; exit 2; }
for phase in "$@"; do
    case $phase in
        install) install ;;
        check) install; check ;;
        overlay) install; overlay ;;
        default) install; main_job default "${DEFAULT_S:-300}" ;;
        study) install; main_job study "${STUDY_S:-900}" --configfile config/config.yaml config/gpu.yaml ;;
        *) echo "unknown phase $phase (install, check, overlay, default, study)"; exit 2 ;;
    esac
done
stamp "done"
