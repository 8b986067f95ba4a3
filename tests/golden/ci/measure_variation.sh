#!/usr/bin/env bash
# Re-measures the variation the ci regression tolerances are set from (see VARIATION.md next to this file):
# two identical runs on this machine (expected: bitwise identical), then runs with torch's CPU kernels forced to
# AVX2 and to no SIMD at all, which stand in for other CPU types (a different CPU takes different vectorised code
# paths, so floating-point sums round differently and training trajectories drift).
#   bash tests/golden/ci/measure_variation.sh [OUT_DIR]     (~5 minutes on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/../../.."
BIN=${BIN:-.venv/bin}
OUT=${1:-/tmp/pdm-bench-variation}
mkdir -p "$OUT"

run() {
  local name=$1; shift
  rm -rf "${OUT:?}/$name"
  mkdir -p "$OUT/$name"
  echo "== $name ${*:-(native kernels: $($BIN/python -c 'import torch; print(torch.backends.cpu.get_cpu_capability())'))}"
  env "$@" "$BIN/snakemake" -s Snakefile --directory "$OUT/$name" --configfile config/ci.yaml --cores 2 \
    > "$OUT/$name.log" 2>&1
}

run native-1
run native-2
run avx2 ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2
run no-simd ATEN_CPU_CAPABILITY=default ONEDNN_MAX_CPU_ISA=SSE41 MKL_ENABLE_INSTRUCTIONS=SSE4_2

lscpu | grep -m1 "Model name"
"$BIN/python" - "$OUT" <<'PY'
import sys
import pandas as pd

out = sys.argv[1]
def table(name):
    t = pd.read_csv(f"{out}/{name}/results/ci/tables/main.csv", dtype={"seed": str})
    return t[t["seed"].str.isdigit()].set_index(["method", "seed"])
base = table("native-1")
print("bitwise identical reruns:", open(f"{out}/native-1/results/ci/tables/main.csv", "rb").read()
      == open(f"{out}/native-2/results/ci/tables/main.csv", "rb").read())
for name in ("native-2", "avx2", "no-simd"):
    other = table(name)
    for column in ("FID", "FID low", "FID high", "KID", "KID low", "KID high", "ΔFID vs ddpm", "ΔFID vs ddpm low",
                   "ΔFID vs ddpm high", "clean-FID", "prototypes used", "params"):
        a, b = pd.to_numeric(base[column], errors="coerce"), pd.to_numeric(other[column], errors="coerce")
        diff = (b - a).abs()
        rel = (diff / a.abs()).max()
        print(f"{name:9s} {column:16s} max |diff| {diff.max():.6g}  max rel {rel:.3%}  "
              f"worst {diff.idxmax() if diff.max() > 0 else '-'}")
PY
