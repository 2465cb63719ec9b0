#!/usr/bin/env bash
# Regenerates src/pjrt/ffi.rs from the vendored src/pjrt/pjrt_c_api.h.
# Needs bindgen-cli (`cargo install bindgen-cli`) and libclang (Debian: libclang-14-dev).
# The output is committed, so ordinary builds never run this.
set -euo pipefail
cd "$(dirname "$0")/.."
export LIBCLANG_PATH="${LIBCLANG_PATH:-/usr/lib/llvm-14/lib}"
tmp=$(mktemp)
bindgen src/pjrt/pjrt_c_api.h --allowlist-item 'PJRT_.*' --default-enum-style consts \
    --with-derive-default --no-layout-tests -o "$tmp" -- -x c
{
    sed -n '1,/^$/p' src/pjrt/ffi.rs
    cat "$tmp"
} > src/pjrt/ffi.rs.new
mv src/pjrt/ffi.rs.new src/pjrt/ffi.rs
rm -f "$tmp"
echo "regenerated src/pjrt/ffi.rs"
