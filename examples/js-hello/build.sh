#!/usr/bin/env bash
# Builds this example into a component: examples/js-hello/build.sh OUT.wasm
# Needs node and this directory's node_modules (`npm ci` here, which
# examples/setup-toolchains.sh runs).
set -euo pipefail

if [[ $# -ne 1 ]]; then
  echo "usage: $0 OUT.wasm" >&2
  exit 2
fi
out="$(realpath -m -- "$1")"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

if [[ ! -d "$here/node_modules/@bytecodealliance/componentize-js" ]]; then
  echo "$0: componentize-js is not installed; run examples/setup-toolchains.sh (or npm ci in $here)" >&2
  exit 1
fi
cd "$here"
node build.mjs "$out"
