#!/usr/bin/env bash
# Starts `ti-xla train --device tpu` on the TPU VM in a session that survives a dropped ssh
# connection, and follows its log.
set -euo pipefail

USAGE="usage: train.sh [flags] --data NAME [--run RUN] [--attach] -- <ti-xla train flags>

Starts on the TPU VM, inside tmux (nohup if tmux is missing), so that it keeps running when
the ssh connection drops:
  ti-xla train --device tpu --train-data-dir ~/ti-xla-data/NAME \\
    --output-dir ~/ti-xla-runs/RUN/output <ti-xla train flags>
logging to ~/ti-xla-runs/RUN/train.log, and returns. The flags after -- go to ti-xla train as
they are (not --device, --train-data-dir or --output-dir, which this script sets); paths in
them are on the VM, relative to its home folder.

Flags:
  --data NAME  the image folder uploaded by upload-images.sh (~/ti-xla-data/NAME on the VM)
  --run RUN    the run's name (letters, digits, '_', '-'; default: NAME); outputs go to
               ~/ti-xla-runs/RUN on the VM (download.sh --run RUN fetches them)
  --attach     follow the run's log (tail -f; Ctrl-C stops following, not training); without
               --data and ti-xla flags it only follows the log of --run RUN"
VALUE_FLAGS="data run"
SWITCH_FLAGS="attach"
PASSTHROUGH_OK=1
opt_data=
opt_run=
opt_attach=0
here=.
[[ ${BASH_SOURCE[0]} == */* ]] && here=${BASH_SOURCE[0]%/*}
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$here/common.sh"
parse_args "$@"

start=1
if [[ -z $opt_data ]]; then
    [[ $opt_attach == 1 && -n $opt_run && $HAVE_PASSTHROUGH == 0 ]] ||
        usage_error "missing --data NAME (the folder uploaded by upload-images.sh; or --run RUN --attach to follow a run)"
    start=0
fi
run_name=${opt_run:-$opt_data}
[[ -z $opt_data ]] || check_simple_name "--data" "$opt_data"
check_simple_name "--run" "$run_name"
for flag in --device --train-data-dir --output-dir; do
    ! passthrough_has "$flag" || usage_error "$flag is set by train.sh; leave it out of the ti-xla flags"
done

run_dir=$VM_RUNS/$run_name
log=$run_dir/train.log
session=ti-xla-$run_name

require_gcloud
if [[ $start == 1 ]]; then
    # The remote shell sets its arguments to the ti-xla command line, and tmux (or nohup) runs
    # it through `sh -c "$job" ARGS...`, so the user's flags are quoted once.
    quote_words ${PASSTHROUGH[@]+"${PASSTHROUGH[@]}"}
    argv="$VM_BIN train --device tpu --train-data-dir $VM_DATA/$opt_data --output-dir $run_dir/output${QUOTED:+ $QUOTED}"
    job="\"\$0\" \"\$@\" >>$log 2>&1; echo \"ti-xla train exited with status \$?\" >>$log"
    quote_words "$job"
    on_vm "$(vm_prelude); [ -d $VM_DATA/$opt_data ] || { echo \"error: no $VM_DATA/$opt_data on this VM; upload it with scripts/tpu-vm/upload-images.sh\" >&2; exit 1; }; mkdir -p $run_dir; set -- $argv; job=$QUOTED; if command -v tmux >/dev/null 2>&1; then if tmux has-session -t =$session 2>/dev/null; then echo \"error: run $run_name is still running (train.sh --run $run_name --attach follows it)\" >&2; exit 1; fi; tmux new-session -d -s $session sh -c \"\$job\" \"\$@\"; else nohup sh -c \"\$job\" \"\$@\" </dev/null >/dev/null 2>&1 & fi"
    if [[ $DRY_RUN == 0 ]]; then
        note "training started on $opt_name (run $run_name, log $log)"
        [[ $opt_attach == 1 ]] || note "follow it: $(script_command train.sh --run "$run_name" --attach)"
    fi
fi
if [[ $opt_attach == 1 ]]; then
    on_vm "tail -n +1 -F $log" --ssh-flag=-t
fi
