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
  --spot                   a Spot VM: much cheaper, but Google may stop it at any time
  --check -- FLAGS         first compile the training run of \`ti-xla train FLAGS\` for this
                           type's topology here (target/release/ti-xla --compile-only, needs
                           scripts/install-plugin.sh tpu, no TPU) and create nothing if it
                           does not fit"
VALUE_FLAGS="accelerator-type version"
SWITCH_FLAGS="spot check"
PASSTHROUGH_OK=1
opt_accelerator_type=v4-8
opt_version=
opt_spot=0
opt_check=0
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

if [[ $opt_check == 1 ]]; then
    [[ $HAVE_PASSTHROUGH == 1 ]] || usage_error "--check needs the ti-xla train flags after --"
    # One host's topology of each type, as libtpu names it.
    case $type in
        v4-8) topology=v4:2x2x1 ;;
        v5litepod-1) topology=v5e:1x1 ;;
        v5litepod-4) topology=v5e:2x2 ;;
        v5litepod-8) topology=v5e:2x4 ;;
        v5p-8) topology=v5p:2x2x1 ;;
        v6e-1) topology=v6e:1x1 ;;
        v6e-4) topology=v6e:2x2 ;;
        v6e-8) topology=v6e:2x4 ;;
        *) usage_error "--check knows no topology for $type (it knows v4-8, v5litepod-1/4/8, v5p-8, v6e-1/4/8)" ;;
    esac
    bin="$here/../../target/release/ti-xla"
    [[ $DRY_RUN == 1 || -x $bin ]] || die "--check needs a local release build: cargo build --release"
    run "$bin" train --device tpu --compile-only --topology "$topology" "${PASSTHROUGH[@]}" ||
        die "the training run does not compile or fit on $type (see above); nothing was created"
elif [[ $HAVE_PASSTHROUGH == 1 ]]; then
    usage_error "ti-xla flags after -- go with --check"
fi

require_gcloud
args=(gcloud compute tpus tpu-vm create "$opt_name" "${WHERE[@]}" "--accelerator-type=$type" "--version=$opt_version")
[[ $opt_spot == 0 ]] || args+=(--spot)
run "${args[@]}"

if [[ $DRY_RUN == 0 ]]; then
    note "created TPU VM $opt_name ($type, $opt_zone); it is billed until you delete it with: $(script_command delete.sh)"
    note "next: $(script_command setup.sh)"
fi
