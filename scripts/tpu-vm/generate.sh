#!/usr/bin/env bash
# Runs `ti-xla generate --device tpu` on the TPU VM, one sample per TPU device by default.
set -euo pipefail

USAGE="usage: generate.sh [flags] [--run RUN] -- <ti-xla generate flags>

Runs on the TPU VM, over ssh, in the foreground:
  ti-xla generate --device tpu --num-samples \$(ti-xla devices --device tpu --count) \\
    <ti-xla generate flags>
With --run RUN it also passes --learned-embeds ~/ti-xla-runs/RUN/output/learned_embeds.safetensors
and --output-dir ~/ti-xla-runs/RUN/samples (download.sh --run RUN fetches them). Any of
--num-samples, --learned-embeds and --output-dir among your flags replaces this script's.
Paths in the flags are on the VM, relative to its home folder. The TPU is used by one
process at a time: wait until training has finished.

Flags:
  --run RUN  the training run (train.sh --run) whose embeddings to use and to write into"
VALUE_FLAGS="run"
SWITCH_FLAGS=""
PASSTHROUGH_OK=1
opt_run=
here=.
[[ ${BASH_SOURCE[0]} == */* ]] && here=${BASH_SOURCE[0]%/*}
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$here/common.sh"
parse_args "$@"

[[ $HAVE_PASSTHROUGH == 1 || -n $opt_run ]] ||
    usage_error "missing the ti-xla generate flags: generate.sh [flags] [--run RUN] -- --prompt 'a photo of <token>' ..."
[[ -z $opt_run ]] || check_simple_name "--run" "$opt_run"
! passthrough_has --device || usage_error "--device is set by generate.sh; leave it out of the ti-xla flags"

command="$(vm_prelude)"
fixed="$VM_BIN generate --device tpu"
if ! passthrough_has --num-samples; then
    command+="; n=\$($VM_BIN devices --device tpu --count)"
    fixed+=" --num-samples \"\$n\""
fi
if [[ -n $opt_run ]]; then
    passthrough_has --learned-embeds ||
        fixed+=" --learned-embeds $VM_RUNS/$opt_run/output/learned_embeds.safetensors"
    passthrough_has --output-dir || fixed+=" --output-dir $VM_RUNS/$opt_run/samples"
fi
quote_words ${PASSTHROUGH[@]+"${PASSTHROUGH[@]}"}
command+="; $fixed${QUOTED:+ $QUOTED}"

require_gcloud
on_vm "$command"

if [[ $DRY_RUN == 0 && -n $opt_run ]]; then
    note "next: $(script_command download.sh --run "$opt_run")"
fi
