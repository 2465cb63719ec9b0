#!/usr/bin/env bash
# Sets the TPU VM up: Rust toolchain, this checkout's HEAD built in release mode, the TPU plugin.
set -euo pipefail

USAGE="usage: setup.sh [flags]

Prepares the TPU VM made by create.sh, over ssh: installs the build tools it lacks (a C
compiler, pip, tmux) and the Rust toolchain (rustup, non-interactive), copies this checkout's
HEAD there (a git archive, so the VM needs no access to your git remote; uncommitted changes
are not copied), builds ti-xla on the VM in release mode (its glibc may be older than yours),
installs the TPU plugin (scripts/install-plugin.sh tpu) and lists the TPU devices.
Run it again after a new commit: the VM's build and plugin folders are kept, the sources
replaced."
VALUE_FLAGS=""
SWITCH_FLAGS=""
here=.
[[ ${BASH_SOURCE[0]} == */* ]] && here=${BASH_SOURCE[0]%/*}
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$here/common.sh"
parse_args "$@"

archive_dir=$REPO_ROOT/target/tpu-vm
archive=$archive_dir/ti-xla-src.tar.gz

# Commands run on the VM, joined into one line for ssh ($ expands there, not here).
# shellcheck disable=SC2016
remote=(
    'set -eu'
    'need='
    'command -v cc >/dev/null 2>&1 || need="$need build-essential"'
    'python3 -m pip --version >/dev/null 2>&1 || need="$need python3-pip"'
    'command -v tmux >/dev/null 2>&1 || need="$need tmux"'
    'if [ -n "$need" ]; then sudo apt-get update -q && sudo DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q $need; fi'
    # scripts/install-plugin.sh passes --root-user-action, which pip < 22.1 (Ubuntu 22.04's) lacks.
    'python3 -m pip install --help 2>/dev/null | grep -q -- --root-user-action || python3 -m pip install --user -q --upgrade pip'
    "[ -x ~/.cargo/bin/cargo ] || { curl --proto =https --tlsv1.2 -sSf https://sh.rustup.rs -o ~/rustup-init.sh && sh ~/rustup-init.sh -y --profile minimal --default-toolchain stable && rm ~/rustup-init.sh; }"
    '. ~/.cargo/env'
    "mkdir -p $VM_REPO"
    "cd $VM_REPO"
    'find . -mindepth 1 -maxdepth 1 ! -name target ! -name .pjrt -exec rm -rf {} +'
    'tar -xzf ~/ti-xla-src.tar.gz'
    'rm ~/ti-xla-src.tar.gz'
    'cargo build --release --locked --bin ti-xla'
    'scripts/install-plugin.sh tpu'
    'mkdir -p ~/.local/bin'
    "ln -sf $VM_BIN ~/.local/bin/ti-xla"
    'target/release/ti-xla devices --device tpu'
)
remote_line=${remote[0]}
for statement in "${remote[@]:1}"; do
    remote_line+="; $statement"
done

require_gcloud
if [[ $DRY_RUN == 0 ]]; then
    git -C "$REPO_ROOT" rev-parse --verify -q HEAD >/dev/null ||
        die "$REPO_ROOT is not a git checkout with a commit; setup.sh copies its HEAD"
    [[ -z $(git -C "$REPO_ROOT" status --porcelain --untracked-files=no) ]] ||
        note "note: uncommitted changes are not copied, only HEAD ($(git -C "$REPO_ROOT" rev-parse --short HEAD))"
fi
run mkdir -p "$archive_dir"
run git -C "$REPO_ROOT" archive --format=tar.gz "--output=$archive" HEAD
run gcloud compute tpus tpu-vm scp "$archive" "$opt_name:ti-xla-src.tar.gz" "${WHERE[@]}"
on_vm "$remote_line"

if [[ $DRY_RUN == 0 ]]; then
    note "ti-xla is built on $opt_name (also as 'ti-xla' in a login shell there)"
    note "next: $(script_command upload-images.sh DIR)"
fi
