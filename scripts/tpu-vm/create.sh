#!/usr/bin/env bash
# Creates the Cloud TPU VM that the other scripts in this folder work on.
set -euo pipefail

USAGE="usage: create.sh [flags]

Creates a Cloud TPU VM (one host) for ti-xla. It is billed from now until delete.sh.

Flags:
  --accelerator-type TYPE  TPU type, one host of up to 8 chips: v2-8, v3-8, v4-8 (default),
                           v5litepod-1/4/8, v5p-8, v6e-1/4/8
  --version VERSION        TPU VM software version (default for the type: tpu-ubuntu2204-base
                           for v2-v4, v2-alpha-tpuv5-lite for v5litepod, v2-alpha-tpuv5 for v5p,
                           v2-alpha-tpuv6e for v6e; list: gcloud compute tpus tpu-vm versions list)
  --spot                   a Spot VM: much cheaper, but Google may stop it at any time"
VALUE_FLAGS="accelerator-type version"
SWITCH_FLAGS="spot"
opt_accelerator_type=v4-8
opt_version=
opt_spot=0
here=.
[[ ${BASH_SOURCE[0]} == */* ]] && here=${BASH_SOURCE[0]%/*}
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$here/common.sh"
parse_args "$@"

type=$opt_accelerator_type
[[ $type =~ ^([a-z0-9]+)-([1-9][0-9]*)$ ]] || usage_error "--accelerator-type '$type' is not a TPU type such as v4-8"
family=${BASH_REMATCH[1]}
size=${BASH_REMATCH[2]}
# The number after the dash is cores (v2-v4) or chips (v5, v6e); above 8 the slice spans
# several hosts, and ti-xla runs on the devices of one host.
[[ $size -le 8 ]] ||
    usage_error "--accelerator-type $type spans several hosts; ti-xla runs on one host: use a type ending in -8 or less (e.g. v4-8)"
if [[ -z $opt_version ]]; then
    case $family in
        v2 | v3 | v4) opt_version=tpu-ubuntu2204-base ;;
        v5litepod | v5e) opt_version=v2-alpha-tpuv5-lite ;;
        v5p) opt_version=v2-alpha-tpuv5 ;;
        v6e) opt_version=v2-alpha-tpuv6e ;;
        *) usage_error "no default --version for $type; pass one (gcloud compute tpus tpu-vm versions list --zone=$opt_zone)" ;;
    esac
fi

require_gcloud
args=(gcloud compute tpus tpu-vm create "$opt_name" "${WHERE[@]}" "--accelerator-type=$type" "--version=$opt_version")
[[ $opt_spot == 0 ]] || args+=(--spot)
run "${args[@]}"

if [[ $DRY_RUN == 0 ]]; then
    note "created TPU VM $opt_name ($type, $opt_zone); it is billed until you delete it with: $(script_command delete.sh)"
    note "next: $(script_command setup.sh)"
fi
