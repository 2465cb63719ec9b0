#!/usr/bin/env bash
# Deletes the TPU VM (and its disk), which stops its billing.
set -euo pipefail

USAGE="usage: delete.sh [flags] [--yes]

Deletes the TPU VM and everything on its disk (uploaded images, runs, the build): download
what you want to keep first (download.sh). Asks for confirmation unless --yes.

Flags:
  --yes  delete without asking"
VALUE_FLAGS=""
SWITCH_FLAGS="yes"
opt_yes=0
here=.
[[ ${BASH_SOURCE[0]} == */* ]] && here=${BASH_SOURCE[0]%/*}
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$here/common.sh"
parse_args "$@"

require_gcloud
if [[ $DRY_RUN == 0 && $opt_yes == 0 ]]; then
    [[ -t 0 ]] || die "not deleting $opt_name without confirmation: pass --yes"
    read -r -p "Delete TPU VM $opt_name ($opt_zone) and everything on its disk? [y/N] " answer
    case $answer in
        y | Y | yes | YES) ;;
        *) die "not deleted" ;;
    esac
fi
# --quiet: gcloud would ask again.
run gcloud compute tpus tpu-vm delete "$opt_name" "${WHERE[@]}" --quiet
