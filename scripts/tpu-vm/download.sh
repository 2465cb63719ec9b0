#!/usr/bin/env bash
# Copies a training run's folder (output dir, samples, log) from the TPU VM to this machine.
set -euo pipefail

USAGE="usage: download.sh [flags] --run RUN [--to DIR]

Copies ~/ti-xla-runs/RUN from the TPU VM into the local folder DIR, as DIR/RUN: the run's
output dir (DIR/RUN/output/learned_embeds.safetensors and the rest), generated samples
(DIR/RUN/samples) and train.log. Files downloaded earlier are overwritten.

Flags:
  --run RUN  the run (train.sh --run; default there: the --data name)
  --to DIR   the local folder to copy into (default: ti-xla-runs)"
VALUE_FLAGS="run to"
SWITCH_FLAGS=""
opt_run=
opt_to=ti-xla-runs
here=.
[[ ${BASH_SOURCE[0]} == */* ]] && here=${BASH_SOURCE[0]%/*}
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$here/common.sh"
parse_args "$@"

[[ -n $opt_run ]] || usage_error "missing --run RUN (the run to download, as given to train.sh)"
check_simple_name "--run" "$opt_run"

require_gcloud
run mkdir -p "$opt_to"
run gcloud compute tpus tpu-vm scp "$opt_name:$SCP_RUNS/$opt_run" "$opt_to" "${WHERE[@]}" --recurse

if [[ $DRY_RUN == 0 ]]; then
    note "downloaded to ${opt_to%/}/$opt_run (embeddings: ${opt_to%/}/$opt_run/output/learned_embeds.safetensors)"
    note "when you are done with the VM: $(script_command delete.sh)"
fi
