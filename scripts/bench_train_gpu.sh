#!/usr/bin/env bash
# The training-step benchmark on an NVIDIA GPU machine that has no network: ti-xla (bf16, the
# jax CUDA PJRT plugin found in the machine's Python), the diffusers PyTorch step
# (--mixed_precision bf16) and the JAX/Flax train_step (f32: the Flax trainer has no mixed
# precision), same random SD 1.5 model, resolution and batch. Everything it needs that the
# machine lacks comes from BENCH_DIR (default .devbench/ in the repository root):
#   BENCH_DIR/ti-xla         the release binary, built elsewhere
#   BENCH_DIR/whl-torch/*    diffusers 0.42.1 (+ importlib_metadata) wheels
#   BENCH_DIR/whl-flax/*     diffusers 0.39.0, transformers 4.57.6, tokenizers 0.22.1,
#                            huggingface_hub 0.36.0 (+ importlib_metadata) wheels
# The model is made there with scripts/make_sd15_random.py (float32, ~4.3 GB in /tmp).
#
#   scripts/bench_train_gpu.sh [OUT_DIR]      env: RES (512), BATCH (1), STEPS (10), PY (python3),
#                                             TOOLS (ti-xla,torch,flax), BUDGET_S (540),
#                                             TI_XLA_EXTRA (more ti-xla flags, e.g. --no-cache-latents)
# Writes OUT_DIR/{log.txt,ti-xla.jsonl,torch.json,flax.json,...} and prints a summary.
set -uo pipefail

if [[ ${1:-} == -h || ${1:-} == --help ]]; then
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
    exit 0
fi
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-${OUT:-/tmp/bench-gpu}}
bench=${BENCH_DIR:-$root/.devbench}
res=${RES:-512}
batch=${BATCH:-1}
steps=${STEPS:-10}
py=${PY:-python3}
tools=${TOOLS:-ti-xla,torch,flax}
budget=${BUDGET_S:-540}
model=/tmp/sd15-random
images=$root/tests/fixtures/sample-images
mkdir -p "$out"
log() { echo "[$(date +%T) +${SECONDS}s] $*" | tee -a "$out/log.txt"; }

log "host: $(nproc) cores; $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1)"
"$py" -m pip install -q --no-index --no-deps --no-compile --target /tmp/site-torch "$bench"/whl-torch/*.whl >>"$out/log.txt" 2>&1
"$py" -m pip install -q --no-index --no-deps --no-compile --target /tmp/site-flax "$bench"/whl-flax/*.whl >>"$out/log.txt" 2>&1
if [[ ! -f $model/unet/diffusion_pytorch_model.safetensors ]]; then
    PYTHONPATH=/tmp/site-torch "$py" "$root/scripts/make_sd15_random.py" "$model" >>"$out/log.txt" 2>&1 ||
        { log "make_sd15_random.py failed"; exit 1; }
fi
log "model ready"

if [[ ,$tools, == *,ti-xla,* ]]; then
    site=$("$py" -c 'import jax_plugins, os; print(os.path.dirname(list(jax_plugins.__path__)[0]))')
    plugin=$(find "$site/jax_plugins" -name 'xla_cuda_plugin.so' | head -1)
    libs=$(find "$site/nvidia" -maxdepth 3 -type d -name lib 2>/dev/null | tr '\n' ':')
    export LD_LIBRARY_PATH="${libs}${LD_LIBRARY_PATH:-}"
    export PATH="$PATH:$(find "$site/nvidia" -maxdepth 4 -type d -name bin 2>/dev/null | tr '\n' ':')"
    log "plugin $plugin"
    "$bench/ti-xla" devices --device gpu --plugin "$plugin" >>"$out/log.txt" 2>&1
    for b in $batch; do
        tag=b$b${TI_XLA_EXTRA:+-encode}
        dir=/tmp/ti-xla-gpu-$tag
        rm -rf "$dir"
        start=$SECONDS
        timeout 300 "$bench/ti-xla" train --device gpu --plugin "$plugin" \
            --pretrained-model-name-or-path "$model" --train-data-dir "$images" \
            --placeholder-token "<cat-toy>" --initializer-token toy --resolution "$res" \
            --train-batch-size "$b" --max-train-steps $((steps + 1)) --learning-rate 1e-4 \
            --lr-warmup-steps 0 --save-steps 1 --checkpointing-steps 0 --mixed-precision bf16 \
            --num-devices 1 --output-dir "$dir" --overwrite --cache-dir "$dir-cache" \
            ${TI_XLA_EXTRA:-} > "$out/ti-xla-$tag.stderr.txt" 2>&1
        log "ti-xla $tag: exit $? after $((SECONDS - start)) s"
        cp "$dir/train_log.jsonl" "$out/ti-xla-$tag.jsonl" 2>/dev/null
    done
fi

if [[ ,$tools, == *,torch,* ]]; then
    start=$SECONDS
    PYTHONPATH=/tmp/site-torch timeout 240 "$py" "$root/scripts/bench_train_torch.py" --device cuda \
        --mixed-precision bf16 --model "$model" --images "$images" --resolution "$res" \
        --batch "$batch" --steps "$steps" --warmup 2 --json "$out/torch.json" \
        > "$out/torch.stdout.txt" 2>&1
    log "torch: exit $? after $((SECONDS - start)) s"
fi

if [[ ,$tools, == *,flax,* ]]; then
    left=$((budget - SECONDS))
    if ((left > 90)); then
        start=$SECONDS
        PYTHONPATH=/tmp/site-flax timeout "$left" "$py" "$root/scripts/bench_train_flax.py" \
            --model "$model" --images "$images" --resolution "$res" --batch "$batch" \
            --steps "$steps" --warmup 2 --json "$out/flax.json" > "$out/flax.stdout.txt" 2>&1
        log "flax: exit $? after $((SECONDS - start)) s"
    else
        log "flax skipped: ${left}s left of the budget"
    fi
fi

"$py" - "$out" <<'EOF'
import json, os, statistics, sys
out = sys.argv[1]
rows = []
for f in sorted(os.listdir(out)):
    p = os.path.join(out, f)
    if f.startswith("ti-xla-b") and f.endswith(".jsonl"):
        secs = [json.loads(l)["seconds"] for l in open(p)]
        st = [b - a for a, b in zip(secs, secs[1:])]
        if st:
            rows.append((f"ti-xla bf16 ({f[7:-6]})", statistics.median(st), min(st), secs[0]))
    elif f in ("torch.json", "flax.json"):
        r = json.load(open(p))
        rows.append((r["tool"] + " " + r["versions"], r["median_s"], min(r["step_times"]), r["first_step_s"]))
print("| tool | step median (s) | min (s) | steps/s | first step (s) |")
print("|---|---|---|---|---|")
for name, med, mn, first in rows:
    print(f"| {name} | {med:.4f} | {mn:.4f} | {1 / med:.2f} | {first:.1f} |")
EOF
