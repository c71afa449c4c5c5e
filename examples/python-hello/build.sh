#!/usr/bin/env bash
# Builds the Python example into a component: examples/python-hello/build.sh OUT.wasm
# Needs componentize-py (examples/setup-toolchains.sh puts it in
# examples/.toolchains/venv); COMPONENTIZE_PY overrides where it is found.
set -euo pipefail

if [[ $# -ne 1 ]]; then
  echo "usage: $0 OUT.wasm" >&2
  exit 2
fi
out="$(realpath -m -- "$1")"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
examples="$(dirname "$here")"

cpy="${COMPONENTIZE_PY:-}"
if [[ -z "$cpy" ]]; then
  if [[ -x "$examples/.toolchains/venv/bin/componentize-py" ]]; then
    cpy="$examples/.toolchains/venv/bin/componentize-py"
  elif command -v componentize-py >/dev/null; then
    cpy="$(command -v componentize-py)"
  else
    echo "$0: componentize-py not found; run examples/setup-toolchains.sh" >&2
    exit 1
  fi
fi

mkdir -p "$(dirname "$out")"
cd "$here"
# The bindings (module wit_world) are generated into the component at build
# time; nothing generated is written into this directory.
"$cpy" -d "$examples/../wit/platform.wit" -w service componentize app -p "$here" -o "$out"
