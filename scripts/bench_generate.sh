#!/usr/bin/env bash
# Times image generation side by side on this machine: `ti-xla generate` and diffusers'
# StableDiffusionPipeline (scripts/bench_generate_torch.py), on the same model, size, steps,
# samples, scheduler and guidance (empty negative prompt, 1 device), and prints a table: seconds
# per image, images/s, ratio to ti-xla, CPU seconds per UNet step, the denoise/decode split,
# start-up, peak RSS (/usr/bin/time -v) and the load average around each run.
#
#   scripts/bench_generate.sh [--model DIR] [--resolution N] [--steps 50] [--samples 1]
#                             [--scheduler pndm|ddim|euler|euler-ancestral|dpmpp-2m]
#                             [--batch N] [--tools ti-xla,torch] [--device cpu|gpu]
#                             [--torch-threads N] [--rounds 1] [--out DIR]
#
#   --model       a diffusers folder [tests/fixtures/tiny-sd1]; SD 1.5 shapes with random
#                 weights: scripts/make_sd15_random.py /tmp/sd15-random
#   --resolution  height and width [the model's: UNet sample_size x 8, 512 for SD 1.5]
#   --scheduler   [the model's scheduler_config.json]
#   --batch       images per diffusers call [all samples at once, as ti-xla on one device]
#   --device      cpu (f32), or gpu: ti-xla --device gpu --mixed-precision bf16 (plugin from
#                 scripts/install-plugin.sh gpu) and torch --device cuda --dtype bf16
#   --torch-threads  torch intra-op threads [the CPUs this process may use]
#   --rounds      repeat the whole set (the machine is shared: compare within a round)
#   Env: TI_XLA (binary, default target/release/ti-xla), TORCH_PY (/tmp/fxenv/bin/python),
#        NICE (nice level, default 10).
#
# ti-xla's numbers come from its own `timing:` line: start-up is loading, uploading and
# compiling (a fresh compile cache per run, so compilation is in it), sampling is the text
# encoder, the denoising steps and the VAE decoder with the images back on the host; its first
# run of the programs is the timed one. diffusers' start-up is the imports and loading; one
# 1-step call (a full batch) warms it up and is left out. CPU s/step: CPU seconds (user +
# system, all threads) per UNet step over the steps after the first tenth, from /proc when
# ti-xla prints its progress lines and from time.process_time in the Python script; on a shared
# machine wall times swing with other load, CPU seconds move less.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
model=$root/tests/fixtures/tiny-sd1
resolution=""
steps=50
samples=1
scheduler=""
batch=""
tools=ti-xla,torch
device=cpu
torch_threads=""
rounds=1
out=/tmp/ti-xla-bench-generate
prompt="a photo of a cat"
guidance=7.5
seed=0
ti_xla=${TI_XLA:-$root/target/release/ti-xla}
torch_py=${TORCH_PY:-/tmp/fxenv/bin/python}
nice_level=${NICE:-10}

while [[ $# -gt 0 ]]; do
    case "$1" in
        --model) model=$2; shift 2 ;;
        --resolution) resolution=$2; shift 2 ;;
        --steps) steps=$2; shift 2 ;;
        --samples) samples=$2; shift 2 ;;
        --scheduler) scheduler=$2; shift 2 ;;
        --batch) batch=$2; shift 2 ;;
        --tools) tools=$2; shift 2 ;;
        --device) device=$2; shift 2 ;;
        --torch-threads) torch_threads=$2; shift 2 ;;
        --rounds) rounds=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        *) echo "error: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

[[ -d "$model/unet" ]] || { echo "error: no model at $model (scripts/make_sd15_random.py $model)" >&2; exit 1; }
[[ -x /usr/bin/time ]] || { echo "error: /usr/bin/time is needed (apt-get install time)" >&2; exit 1; }
case "$device" in
    cpu) xla_device=(--device cpu --mixed-precision no); torch_device=(--device cpu --dtype f32); dtype=f32 ;;
    gpu) xla_device=(--device gpu --mixed-precision bf16); torch_device=(--device cuda --dtype bf16); dtype=bf16 ;;
    *) echo "error: --device is cpu or gpu" >&2; exit 2 ;;
esac
model=$(cd "$model" && pwd)
size=()
[[ -n "$resolution" ]] && size=(--height "$resolution" --width "$resolution")
sched=()
[[ -n "$scheduler" ]] && sched=(--scheduler "$scheduler")
mkdir -p "$out"
results="$out/results.jsonl"
: > "$results"

# shellcheck source=scripts/bench_common.sh
source "$root/scripts/bench_common.sh"

# ti-xla's run -> one JSON line in $results.
run_ti_xla() {
    local round=$1
    local dir="$out/ti-xla-$round"
    rm -rf "$dir"
    mkdir -p "$dir"
    local before t0
    before=$(loadavg)
    t0=$(date +%s.%N)
    /usr/bin/time -v -o "$dir/time.txt" nice -n "$nice_level" "$ti_xla" generate \
        --pretrained-model-name-or-path "$model" --prompt "$prompt" --num-samples "$samples" \
        --num-inference-steps "$steps" --guidance-scale "$guidance" --seed "$seed" \
        "${size[@]}" "${sched[@]}" "${xla_device[@]}" --num-devices 1 \
        --output-dir "$dir/images" --overwrite --cache-dir "$dir/compile-cache" \
        2> >(stamp "$t0" "$dir/pid" > "$dir/stderr.txt") > "$dir/stdout.txt" &
    local tpid=$!
    find_ti_xla_pid "$tpid" "$dir/pid"
    wait "$tpid" || { echo "error: ti-xla failed; see $dir/stderr.txt" >&2; sleep 1; tail -5 "$dir/stderr.txt" >&2; exit 1; }
    sleep 1
    local versions
    versions=$("$ti_xla" devices "${xla_device[@]:0:2}" 2>/dev/null | sed -n 's/^PJRT API: /PJRT API /p')
    python3 - "$dir" "$round" "$before" "$(loadavg)" "$versions" "$device" >> "$results" <<'EOF'
import json, re, sys
d, rnd, before, after, versions, device = sys.argv[1:]
lines = [l.split(" ", 2) for l in open(f"{d}/stderr.txt").read().splitlines()]
text = lambda l: l[2] if len(l) > 2 else ""
m = next(re.match(r"timing: start-up (\S+) s, sampling (\S+) s for (\d+) image\(s\) x (\d+) steps "
                  r"\((\S+) s/image; text (\S+) s, denoise (\S+) s = (\d+) x (\S+) s, decode (\S+) s\)",
                  text(l)) for l in lines if text(l).startswith("timing:"))
size = next(re.search(r"of (\d+)x(\d+) on", text(l)) for l in lines if text(l).startswith("generating "))
startup, sampling, samples = float(m[1]), float(m[2]), int(m[3])
# CPU seconds per UNet step between the first and the last progress line ("step k/N").
prog = [(int(p[1]), float(l[1])) for l in lines if (p := re.match(r"step (\d+)/(\d+) ", text(l)))]
cpu_step = ((prog[-1][1] - prog[0][1]) / (prog[-1][0] - prog[0][0])
            if len(prog) > 1 and prog[-1][0] > prog[0][0] else None)
timing = open(f"{d}/time.txt").read()
rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", timing).group(1))
wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", timing).group(1)
print(json.dumps({
    "tool": "ti-xla", "round": int(rnd), "versions": versions, "device": device,
    "width": int(size[1]), "height": int(size[2]), "steps": int(m[4]), "unet_steps": int(m[8]),
    "samples": samples, "startup_s": startup, "sampling_s": sampling,
    "s_per_image": sampling / samples, "images_per_s": samples / sampling,
    "denoise_s": float(m[7]), "decode_s": float(m[10]), "cpu_step_s": cpu_step,
    "peak_rss_mb": rss / 1024, "wall": wall, "load_before": before, "load_after": after,
}))
EOF
}

run_torch() {
    local round=$1
    local dir="$out/torch-$round"
    rm -rf "$dir"
    mkdir -p "$dir"
    local before extra=()
    [[ -n "$batch" ]] && extra+=(--batch "$batch")
    [[ -n "$torch_threads" ]] && extra+=(--threads "$torch_threads")
    before=$(loadavg)
    /usr/bin/time -v -o "$dir/time.txt" nice -n "$nice_level" "$torch_py" \
        "$root/scripts/bench_generate_torch.py" --model "$model" --prompt "$prompt" \
        --num-samples "$samples" --num-inference-steps "$steps" --guidance-scale "$guidance" \
        --seed "$seed" "${size[@]}" "${sched[@]}" "${torch_device[@]}" "${extra[@]}" \
        --json "$dir/result.json" > "$dir/stdout.txt" 2> "$dir/stderr.txt" \
        || { echo "error: the torch script failed; see $dir/stderr.txt" >&2; tail -5 "$dir/stderr.txt" >&2; exit 1; }
    python3 - "$dir" "$round" "$before" "$(loadavg)" >> "$results" <<'EOF'
import json, re, sys
d, rnd, before, after = sys.argv[1:]
r = json.load(open(f"{d}/result.json"))
timing = open(f"{d}/time.txt").read()
r["peak_rss_mb"] = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", timing).group(1)) / 1024
r["wall"] = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", timing).group(1)
r.update(tool="torch", round=int(rnd), load_before=before, load_after=after)
print(json.dumps(r))
EOF
}

IFS=, read -r -a tool_list <<< "$tools"
for tool in "${tool_list[@]}"; do
    case "$tool" in
        ti-xla|torch) ;;
        *) echo "error: unknown tool $tool (ti-xla, torch)" >&2; exit 2 ;;
    esac
done
for round in $(seq 1 "$rounds"); do
    for tool in "${tool_list[@]}"; do
        echo "[$(date +%H:%M:%S)] round $round: $tool, $samples image(s) x $steps steps on $device (load $(loadavg)) ..." >&2
        case "$tool" in
            ti-xla) run_ti_xla "$round" ;;
            torch) run_torch "$round" ;;
        esac
    done
done

sched_name=${scheduler:-"the model's scheduler"}
python3 - "$results" "$model" "$dtype" "$sched_name" <<'EOF'
import json, sys
path, model, dtype, sched = sys.argv[1:]
rows = [json.loads(l) for l in open(path)]
r0 = rows[0]
print(f"\nGeneration, {model}, {r0['width']}x{r0['height']}, {r0['samples']} image(s) x {r0['steps']} steps, "
      f"{sched}, guidance 7.5, {dtype}, 1 {r0['device']} device ({path})")
for r in rows:
    if r["round"] == 1:
        print(f"  {r['tool']}: {r['versions']}")
print("| round | tool | s/image | images/s | vs ti-xla | CPU s/UNet step | denoise / decode (s) | start-up (s) | wall (total) | peak RSS (GB) | load before -> after |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
f = lambda v, p=3: "-" if v is None else f"{v:.{p}g}"
for rnd in sorted({r["round"] for r in rows}):
    this = [r for r in rows if r["round"] == rnd]
    base = next((r["s_per_image"] for r in this if r["tool"] == "ti-xla"), None)
    for r in this:
        ratio = f"{r['s_per_image'] / base:.2f}x" if base else "-"
        startup = f(r["startup_s"])
        if "warmup_s" in r:
            startup += f" (+{f(r['warmup_s'])} warm-up)"
        cpu = f(r.get("cpu_step_s")) if r["device"] == "cpu" else "-"
        print(f"| {rnd} | {r['tool']} | {f(r['s_per_image'])} | {f(r['images_per_s'])} | {ratio} | {cpu} "
              f"| {f(r['denoise_s'])} / {f(r['decode_s'])} | {startup} | {r['wall']} "
              f"| {r['peak_rss_mb'] / 1024:.2f} | {r['load_before']} -> {r['load_after']} |")
print("vs ti-xla: s/image over ti-xla's (above 1: slower than ti-xla)")
EOF
