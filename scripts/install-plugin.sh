#!/usr/bin/env bash
# Installs a PJRT plugin wheel from PyPI into .pjrt/<device>/ (or DIR) and prints the path of
# its shared library. Idempotent: when the plugin is already there it only prints the path.
#
#   scripts/install-plugin.sh cpu            # xla-cpu-pjrt (OpenXLA's CPU plugin)
#   scripts/install-plugin.sh gpu            # jax-cuda12-pjrt + the CUDA 12 runtime wheels
#   scripts/install-plugin.sh tpu            # libtpu (on a cloud TPU VM)
#   scripts/install-plugin.sh cpu /opt/pjrt  # somewhere else (then pass --plugin or TI_XLA_PLUGIN)
set -euo pipefail

CPU_PACKAGES=(xla-cpu-pjrt==0.0.1)
CPU_SO=xla_plugins/xla_cpu_pjrt/xla_cpu_pjrt.so
# The CUDA plugin needs CUDA 12 user-space libraries (cudart, cublas, cudnn, cufft, cusolver,
# cusparse, nccl, nvjitlink, ptxas); the `with-cuda` extra of jax-cuda12-plugin pins matching
# NVIDIA wheels, so only an NVIDIA driver (>= 525) is needed on the machine.
GPU_VERSION=0.12.0.1
GPU_PACKAGES=("jax-cuda12-pjrt==${GPU_VERSION}" "jax-cuda12-plugin[with-cuda]==${GPU_VERSION}")
GPU_SO=jax_plugins/xla_cuda12/xla_cuda_plugin.so
TPU_PACKAGES=(libtpu==0.0.52)
TPU_SO=libtpu/libtpu.so

usage() {
    sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
}

if [[ $# -lt 1 || $# -gt 2 || "$1" == "-h" || "$1" == "--help" ]]; then
    usage
    [[ $# -ge 1 && ( "$1" == "-h" || "$1" == "--help" ) ]] && exit 0
    exit 2
fi

device=$1
root=$(cd "$(dirname "$0")/.." && pwd)
dir=${2:-"$root/.pjrt/$device"}

case "$device" in
    cpu) packages=("${CPU_PACKAGES[@]}"); so=$CPU_SO ;;
    gpu) packages=("${GPU_PACKAGES[@]}"); so=$GPU_SO ;;
    tpu) packages=("${TPU_PACKAGES[@]}"); so=$TPU_SO ;;
    *) echo "error: unknown device '$device' (expected cpu, gpu or tpu)" >&2; exit 2 ;;
esac

if [[ -f "$dir/$so" && -f "$dir/.installed" && "$(cat "$dir/.installed")" == "${packages[*]}" ]]; then
    echo "$dir/$so"
    exit 0
fi

pip=(python3 -m pip)
if ! "${pip[@]}" --version >/dev/null 2>&1; then
    echo "error: pip for python3 is needed to install the plugin wheel (Debian: apt-get install python3-pip)" >&2
    exit 1
fi

# Install into a fresh folder beside the target and swap it in, so an interrupted install
# never leaves a half-written plugin that a later run would take as complete.
staging="$dir.partial.$$"
rm -rf "$staging"
trap 'rm -rf "$staging"' EXIT
echo "installing ${packages[*]} into $dir ..." >&2
PIP_ROOT_USER_ACTION=ignore "${pip[@]}" install --quiet --disable-pip-version-check --no-warn-script-location \
    --target "$staging" "${packages[@]}" >&2
if [[ ! -f "$staging/$so" ]]; then
    echo "error: the wheel did not contain $so; the package layout may have changed" >&2
    exit 1
fi
printf '%s' "${packages[*]}" > "$staging/.installed"
rm -rf "$dir"
mkdir -p "$(dirname "$dir")"
mv "$staging" "$dir"
trap - EXIT
echo "$dir/$so"
