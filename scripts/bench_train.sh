#!/usr/bin/env bash
# Times the Textual Inversion training step side by side on this machine's CPU: ti-xla, the
# diffusers PyTorch trainer's step (scripts/bench_train_torch.py) and the JAX/Flax trainer's
# train_step (scripts/bench_train_flax.py), on the same model, shapes and batch (f32, 1 device,
# per-device batch 1), and prints a table: median step time, ratio to ti-xla, start-up and
# warm-up, peak RSS (/usr/bin/time -v), and the load average around each run.
#
#   scripts/bench_train.sh [--model DIR] [--resolution 256] [--steps 5] [--rounds 1]
#                          [--tools ti-xla,ti-xla-encode,torch,flax] [--out DIR]
#                          [--alt-plugin PATH] [--dump-hlo DIR]
#
#   --model       a diffusers folder; make one with scripts/make_sd15_random.py /tmp/sd15-random
#                 (or an SDXL one with scripts/make_sdxl_random.py /tmp/sdxl-random: the torch
#                 tool then runs diffusers' SDXL step, scripts/bench_train_sdxl_torch.py)
#   --tools       any of: ti-xla (default: VAE moments cached per image, the encoder runs once),
#                 ti-xla-encode (--no-cache-latents: the VAE encoder in every step, as the
#                 references do), ti-xla-alt (ti-xla with --alt-plugin via TI_XLA_PLUGIN),
#                 torch, flax
#   --rounds      repeat the whole set (the machine is shared: compare within a round)
#   --dump-hlo    XLA_FLAGS=--xla_dump_to=DIR for the first ti-xla run
#   Env: TI_XLA (binary, default target/release/ti-xla), TORCH_PY (/tmp/fxenv/bin/python),
#        FLAX_PY (/tmp/flaxbench/bin/python), NICE (nice level, default 10).
#
# ti-xla's step times come from output/train_log.jsonl (--save-steps 1 reads every loss back,
# so each line's `seconds` is when that step finished); the first step is left out of the
# median (the references' first steps carry allocation and, for Flax, compilation).
# On a shared machine wall times swing with other load: the CPU seconds per step (user +
# system over all threads; /proc for ti-xla, time.process_time in the Python scripts) move less.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
model=/tmp/sd15-random
resolution=256
steps=5
rounds=1
tools=ti-xla,ti-xla-encode,torch,flax
out=/tmp/ti-xla-bench
alt_plugin=""
dump_hlo=""
images="$root/tests/fixtures/sample-images"
ti_xla=${TI_XLA:-$root/target/release/ti-xla}
torch_py=${TORCH_PY:-/tmp/fxenv/bin/python}
flax_py=${FLAX_PY:-/tmp/flaxbench/bin/python}
nice_level=${NICE:-10}

while [[ $# -gt 0 ]]; do
    case "$1" in
        --model) model=$2; shift 2 ;;
        --resolution) resolution=$2; shift 2 ;;
        --steps) steps=$2; shift 2 ;;
        --rounds) rounds=$2; shift 2 ;;
        --tools) tools=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --alt-plugin) alt_plugin=$2; shift 2 ;;
        --dump-hlo) dump_hlo=$2; shift 2 ;;
        -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        *) echo "error: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

[[ -d "$model/unet" ]] || { echo "error: no model at $model (scripts/make_sd15_random.py $model)" >&2; exit 1; }
[[ -x /usr/bin/time ]] || { echo "error: /usr/bin/time is needed (apt-get install time)" >&2; exit 1; }
mkdir -p "$out"
results="$out/results-r${resolution}.jsonl"

# shellcheck source=scripts/bench_common.sh
source "$root/scripts/bench_common.sh"

# ti-xla's run -> one JSON line in $results.
run_ti_xla() {
    local variant=$1 round=$2
    local dir="$out/$variant-r$resolution-$round"
    local extra=() env=()
    case "$variant" in
        ti-xla-encode) extra=(--no-cache-latents) ;;
        ti-xla-alt) env=(TI_XLA_PLUGIN="$alt_plugin") ;;
    esac
    if [[ -n "$dump_hlo" && -z "${dumped:-}" ]]; then
        env+=(XLA_FLAGS="--xla_dump_to=$dump_hlo")
        dumped=1
    fi
    rm -rf "$dir"
    mkdir -p "$dir"
    local before t0
    before=$(loadavg)
    t0=$(date +%s.%N)
    # A fresh compile cache per run: the start-up then includes compilation.
    env "${env[@]}" /usr/bin/time -v -o "$dir/time.txt" nice -n "$nice_level" "$ti_xla" train \
        --pretrained-model-name-or-path "$model" --train-data-dir "$images" \
        --placeholder-token "<cat-toy>" --initializer-token toy --resolution "$resolution" \
        --train-batch-size 1 --max-train-steps $((steps + 1)) --learning-rate 1e-4 \
        --lr-warmup-steps 0 --save-steps 1 --checkpointing-steps 0 --mixed-precision no \
        --num-devices 1 --output-dir "$dir/output" --overwrite --cache-dir "$dir/compile-cache" \
        "${extra[@]}" 2> >(stamp "$t0" "$dir/pid" > "$dir/stderr.txt") > "$dir/stdout.txt" &
    local tpid=$!
    find_ti_xla_pid "$tpid" "$dir/pid"
    wait "$tpid"
    sleep 1
    local plugin_desc
    plugin_desc=$(env "${env[@]}" "$ti_xla" devices 2>/dev/null | sed -n 's/^PJRT API: /PJRT API /p')
    python3 - "$dir" "$variant" "$round" "$before" "$(loadavg)" "$resolution" "$plugin_desc" >> "$results" <<'EOF'
import json, re, statistics, sys
d, variant, rnd, before, after, res, plugin = sys.argv[1:]
log = [json.loads(l) for l in open(f"{d}/output/train_log.jsonl")]
secs = [r["seconds"] for r in log]
steps = [secs[0]] + [b - a for a, b in zip(secs, secs[1:])]
lines = [l.split(" ", 2) for l in open(f"{d}/stderr.txt").read().splitlines()]
t = lambda pat: next(float(l[0]) for l in lines if pat in l[2])
first_done = t("step 1/")
compiling = t("compiling the training step")
cpu = [float(l[1]) for l in lines if l[2].startswith("step ")]
cpu_steps = [b - a for a, b in zip(cpu, cpu[1:])]
timing = open(f"{d}/time.txt").read()
rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", timing).group(1))
wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", timing).group(1)
timed = steps[1:]
print(json.dumps({
    "tool": variant, "round": int(rnd), "resolution": int(res), "versions": plugin,
    "first_step_s": steps[0], "step_times": timed, "median_s": statistics.median(timed),
    "cpu_step_times": cpu_steps,
    "startup_to_first_step_s": first_done,
    "setup_s": first_done - steps[0] - compiling,  # compile + weights upload + latent cache
    "peak_rss_mb": rss / 1024, "wall": wall, "load_before": before, "load_after": after,
    "losses": [r["loss"] for r in log],
}))
EOF
}

run_python() {
    local tool=$1 round=$2 py script
    case "$tool" in
        torch)
            py=$torch_py
            script=bench_train_torch.py
            # An SDXL folder: diffusers' SDXL TI step.
            [[ -d "$model/text_encoder_2" ]] && script=bench_train_sdxl_torch.py
            ;;
        flax) py=$flax_py; script=bench_train_flax.py ;;
    esac
    local dir="$out/$tool-r$resolution-$round"
    rm -rf "$dir"
    mkdir -p "$dir"
    local before warmup=1
    [[ "$tool" == flax ]] && warmup=2  # pmap compiles again on the second call (donated state)
    before=$(loadavg)
    /usr/bin/time -v -o "$dir/time.txt" nice -n "$nice_level" "$py" "$root/scripts/$script" \
        --model "$model" --images "$images" --resolution "$resolution" --steps "$steps" \
        --warmup "$warmup" --json "$dir/result.json" > "$dir/stdout.txt" 2> "$dir/stderr.txt"
    python3 - "$dir" "$tool" "$round" "$before" "$(loadavg)" >> "$results" <<'EOF'
import json, re, sys
d, tool, rnd, before, after = sys.argv[1:]
r = json.load(open(f"{d}/result.json"))
timing = open(f"{d}/time.txt").read()
r["peak_rss_mb"] = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", timing).group(1)) / 1024
r["wall"] = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", timing).group(1)
r.update(tool=tool, round=int(rnd), load_before=before, load_after=after)
print(json.dumps(r))
EOF
}

IFS=, read -r -a tool_list <<< "$tools"
for round in $(seq 1 "$rounds"); do
    for tool in "${tool_list[@]}"; do
        echo "[$(date +%H:%M:%S)] round $round: $tool at ${resolution}x${resolution} (load $(loadavg)) ..." >&2
        case "$tool" in
            ti-xla|ti-xla-encode) run_ti_xla "$tool" "$round" ;;
            ti-xla-alt)
                [[ -n "$alt_plugin" ]] || { echo "error: ti-xla-alt needs --alt-plugin PATH" >&2; exit 2; }
                run_ti_xla "$tool" "$round" ;;
            torch|flax) run_python "$tool" "$round" ;;
            *) echo "error: unknown tool $tool" >&2; exit 2 ;;
        esac
    done
done

python3 - "$results" "$resolution" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if int(json.loads(l)["resolution"]) == int(sys.argv[2])]
print(f"\nTraining step, {sys.argv[2]}x{sys.argv[2]}, batch 1, f32, 1 CPU device ({sys.argv[1]})")
print("| round | tool | step median (s) | min-max (s) | vs ti-xla | CPU s/step (median) | first step (s) | start-up + warm-up (s) | peak RSS (GB) | load before -> after |")
print("|---|---|---|---|---|---|---|---|---|---|")
for rnd in sorted({r["round"] for r in rows}):
    this = [r for r in rows if r["round"] == rnd]
    base = next((r["median_s"] for r in this if r["tool"] == "ti-xla"), None)
    for r in this:
        ratio = f"{r['median_s'] / base:.2f}x" if base else "-"
        cpu = r.get("cpu_step_times") or []
        cpu = f"{statistics.median(cpu):.1f}" if cpu else "-"
        print(f"| {rnd} | {r['tool']} | {r['median_s']:.2f} | {min(r['step_times']):.2f}-{max(r['step_times']):.2f} "
              f"| {ratio} | {cpu} | {r['first_step_s']:.1f} | {r['startup_to_first_step_s']:.1f} | {r['peak_rss_mb'] / 1024:.1f} "
              f"| {r['load_before']} -> {r['load_after']} |")
EOF
