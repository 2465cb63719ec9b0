#!/usr/bin/env bash
# Copies a local folder of training images to the TPU VM (~/ti-xla-data/<name>).
set -euo pipefail

USAGE="usage: upload-images.sh [flags] DIR

Copies the image folder DIR (3-5 photos of your concept; jpg, png, webp, bmp, tiff) to
~/ti-xla-data/<name> on the TPU VM, where <name> is the folder's name or --as NAME.
An earlier upload under the same name is replaced. Train on it with: train.sh --data <name>

Flags:
  --as NAME  the name on the VM (letters, digits, '_', '-'; default: DIR's folder name)"
VALUE_FLAGS="as"
SWITCH_FLAGS=""
MAX_POSITIONAL=1
opt_as=
here=.
[[ ${BASH_SOURCE[0]} == */* ]] && here=${BASH_SOURCE[0]%/*}
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$here/common.sh"
parse_args "$@"

[[ ${#POSITIONAL[@]} -eq 1 ]] || usage_error "missing the image folder: upload-images.sh [flags] DIR"
dir=${POSITIONAL[0]}
while [[ $dir == */ && $dir != / ]]; do
    dir=${dir%/}
done
[[ -d $dir ]] || usage_error "'$dir' is not a folder"
data=${opt_as:-${dir##*/}}
check_simple_name "the data name (--as)" "$data"

require_gcloud
on_vm "set -eu; rm -rf $VM_DATA/$data; mkdir -p $VM_DATA"
run gcloud compute tpus tpu-vm scp "$dir" "$opt_name:$SCP_DATA/$data" "${WHERE[@]}" --recurse

if [[ $DRY_RUN == 0 ]]; then
    note "uploaded to $VM_DATA/$data on $opt_name"
    note "next: $(script_command train.sh --data "$data" -- --placeholder-token "<$data>" --initializer-token WORD ...)"
fi
