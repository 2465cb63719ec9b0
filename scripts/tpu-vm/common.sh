# shellcheck shell=bash
# The variables set here are used by the scripts that source this file.
# shellcheck disable=SC2034
# Shared by the scripts in scripts/tpu-vm/ (sourced, never run): flag parsing, shell quoting,
# `run` (print the command in a dry run, else run it), gcloud checks and the layout on the VM.
#
# Everything up to the first command that `run` executes uses bash builtins only, so --help,
# --dry-run and the argument errors need nothing else installed. Written for bash 3.2 as well
# (macOS): no ${x^^}, no associative arrays, empty arrays expanded as ${a[@]+"${a[@]}"}.
#
# A script sets, before sourcing this file:
#   USAGE         its help text (the common flags are appended)
#   VALUE_FLAGS   its flags that take a value, space separated, without "--" ("" if none)
#   SWITCH_FLAGS  its flags that take no value
#   MAX_POSITIONAL  how many positional arguments it takes (default 0)
#   PASSTHROUGH_OK  1 if it takes "-- <ti-xla flags>"
# and the defaults of its own flags; `--some-flag` is stored in `opt_some_flag`. Then it
# calls `parse_args "$@"`.

SCRIPT_NAME=${0##*/}
# Invoked by a path relative to the script folder or absolute; the repository is two folders up.
TPU_VM_DIR=.
[[ ${BASH_SOURCE[0]} == */* ]] && TPU_VM_DIR=${BASH_SOURCE[0]%/*}
TPU_VM_DIR=$(cd "$TPU_VM_DIR" && pwd)
REPO_ROOT=$(cd "$TPU_VM_DIR/../.." && pwd)

# Layout on the VM. These strings go unquoted into commands run by the VM's shell, where "~"
# expands to the VM user's home; names put into them are checked to need no quoting.
# shellcheck disable=SC2088
VM_REPO='~/ti-xla'
# shellcheck disable=SC2088
VM_BIN='~/ti-xla/target/release/ti-xla'
# shellcheck disable=SC2088
VM_DATA='~/ti-xla-data'
# shellcheck disable=SC2088
VM_RUNS='~/ti-xla-runs'
# The same folders for `gcloud ... scp`, whose remote paths are relative to the home folder.
SCP_DATA=ti-xla-data
SCP_RUNS=ti-xla-runs

opt_name=${TI_XLA_TPU_NAME:-ti-xla}
opt_zone=${TI_XLA_TPU_ZONE:-us-central2-b}
opt_project=${TI_XLA_TPU_PROJECT:-}
DRY_RUN=0
POSITIONAL=()
PASSTHROUGH=()
HAVE_PASSTHROUGH=0

COMMON_USAGE="Common flags:
  --name NAME        TPU VM name (default: ti-xla, or \$TI_XLA_TPU_NAME)
  --zone ZONE        its zone (default: us-central2-b, or \$TI_XLA_TPU_ZONE)
  --project PROJECT  Google Cloud project (default: \$TI_XLA_TPU_PROJECT, else gcloud's own)
  --dry-run          print the commands, one per line and quoted for pasting, instead of
                     running them (needs no gcloud)
  -h, --help         show this help"

usage() {
    printf '%s\n\n%s\n' "$USAGE" "$COMMON_USAGE"
}

# One-line error on stderr. `die MESSAGE` exits 1; `usage_error MESSAGE` exits 2.
die() {
    printf '%s: error: %s\n' "$SCRIPT_NAME" "$1" >&2
    exit 1
}
usage_error() {
    printf '%s: error: %s (see %s --help)\n' "$SCRIPT_NAME" "$1" "$SCRIPT_NAME" >&2
    exit 2
}
note() {
    printf '%s\n' "$*" >&2
}

# Is word $1 in the space-separated list $2?
in_list() {
    [[ " $2 " == *" $1 "* ]]
}

parse_args() {
    local arg flag key value
    while [[ $# -gt 0 ]]; do
        arg=$1
        shift
        case $arg in
            -h | --help)
                usage
                exit 0
                ;;
            --dry-run) DRY_RUN=1 ;;
            --)
                [[ ${PASSTHROUGH_OK:-0} == 1 ]] || usage_error "unexpected '--': $SCRIPT_NAME takes no ti-xla flags"
                HAVE_PASSTHROUGH=1
                PASSTHROUGH=("$@")
                break
                ;;
            --?*)
                flag=${arg%%=*}
                key=${flag#--}
                if in_list "$key" "name zone project ${VALUE_FLAGS:-}"; then
                    if [[ $arg == *=* ]]; then
                        value=${arg#*=}
                    else
                        [[ $# -gt 0 ]] || usage_error "$flag needs a value"
                        value=$1
                        shift
                    fi
                    [[ -n $value ]] || usage_error "$flag needs a non-empty value"
                    printf -v "opt_${key//-/_}" '%s' "$value"
                elif in_list "$key" "${SWITCH_FLAGS:-}"; then
                    [[ $arg != *=* ]] || usage_error "$flag takes no value"
                    printf -v "opt_${key//-/_}" '%s' 1
                else
                    usage_error "unknown flag $flag"
                fi
                ;;
            -?*) usage_error "unknown flag $arg" ;;
            *)
                [[ ${#POSITIONAL[@]} -lt ${MAX_POSITIONAL:-0} ]] || usage_error "unexpected argument '$arg'"
                POSITIONAL+=("$arg")
                ;;
        esac
    done
    [[ $opt_name =~ ^[a-z]([-a-z0-9]*[a-z0-9])?$ ]] ||
        usage_error "--name '$opt_name' is not a TPU VM name (lowercase letters, digits and '-', starting with a letter)"
    [[ $opt_zone =~ ^[a-z0-9-]+$ ]] || usage_error "--zone '$opt_zone' is not a zone (e.g. us-central2-b)"
    # Where the VM is, for every gcloud command.
    WHERE=("--zone=$opt_zone")
    [[ -z $opt_project ]] || WHERE+=("--project=$opt_project")
}

# Checks that $2 is usable as a folder or run name on the VM (no quoting needed, a tmux
# session name); $1 says what it is in the error.
check_simple_name() {
    [[ $2 =~ ^[A-Za-z0-9_-]+$ ]] || usage_error "$1 '$2' may hold only letters, digits, '_' and '-'"
}

# Sets QUOTED to the arguments quoted for a POSIX shell (bash, zsh, sh) and joined by spaces:
# words of safe characters stay bare, anything else is single-quoted ('\'' for a quote).
quote_words() {
    local word rest head out=''
    QUOTED=''
    for word in "$@"; do
        if [[ -n $word && $word != *[!A-Za-z0-9_@%+=:,./-]* && $word != =* ]]; then
            out=$word
        else
            out=''
            rest=$word
            while [[ $rest == *\'* ]]; do
                head=${rest%%\'*}
                out+=$head"'\\''"
                rest=${rest#*\'}
            done
            out="'$out$rest'"
        fi
        QUOTED+="${QUOTED:+ }$out"
    done
}

# Prints the command (dry run) or shows it on stderr and runs it.
run() {
    quote_words "$@"
    if [[ $DRY_RUN == 1 ]]; then
        printf '%s\n' "$QUOTED"
        return 0
    fi
    printf '+ %s\n' "$QUOTED" >&2
    "$@"
}

# Runs the shell command $1 on the VM (extra gcloud flags may follow).
on_vm() {
    local command=$1
    shift
    run gcloud compute tpus tpu-vm ssh "$opt_name" "${WHERE[@]}" "$@" --command "$command"
}

# Fails with one line unless gcloud is installed and an account is logged in (not in a dry run).
require_gcloud() {
    [[ $DRY_RUN == 1 ]] && return 0
    command -v gcloud >/dev/null 2>&1 ||
        die "gcloud (the Google Cloud CLI) is not installed or not on PATH: install it from https://cloud.google.com/sdk/docs/install (--dry-run shows the commands without it)"
    local account
    account=$(gcloud auth list --filter=status:ACTIVE --format='value(account)' 2>/dev/null) ||
        die "'gcloud auth list' failed; check your gcloud installation"
    [[ -n $account ]] || die "no Google Cloud account is logged in: run 'gcloud auth login'"
}

# The start of every command run on the VM after setup: stop at the first error, and say so
# when ti-xla has not been built there.
vm_prelude() {
    printf '%s' "set -eu; [ -x $VM_BIN ] || { echo \"error: ti-xla is not built on this VM; run scripts/tpu-vm/setup.sh first\" >&2; exit 1; }"
}

# The command that runs script $1 again with the same VM flags (for "next step" notes).
script_command() {
    local cmd=("scripts/tpu-vm/$1")
    shift
    [[ $opt_name == ti-xla ]] || cmd+=(--name "$opt_name")
    [[ $opt_zone == us-central2-b ]] || cmd+=(--zone "$opt_zone")
    [[ -z $opt_project ]] || cmd+=(--project "$opt_project")
    quote_words "${cmd[@]}" "$@"
    printf '%s' "$QUOTED"
}

# Does the passthrough list hold flag $1 (as "--flag", "--flag=..." or its snake_case alias)?
passthrough_has() {
    local arg flag
    for arg in ${PASSTHROUGH[@]+"${PASSTHROUGH[@]}"}; do
        flag=${arg%%=*}
        [[ ${flag//_/-} != "$1" ]] || return 0
    done
    return 1
}
