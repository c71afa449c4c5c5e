#!/usr/bin/env bash
# Installs the toolchains the polyglot examples build with, under examples/
# (gitignored). Idempotent, and quick when everything is there already.
# `scripts/setup --tests` calls it (the examples' integration test builds them).
#   componentize-py  into examples/.toolchains/venv (python-hello)
#   componentize-js  `npm ci` in js-hello/ and http-hello/ (pinned by their
#                    package-lock.json)
# Needs python3 (with venv) and node >= 18 with npm on PATH.
set -euo pipefail

COMPONENTIZE_PY_VERSION=0.25.1
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/.toolchains/venv"

fail() {
  echo "setup: $*" >&2
  exit 1
}

if [[ "$("$venv/bin/componentize-py" --version 2>/dev/null)" != "componentize-py $COMPONENTIZE_PY_VERSION" ]]; then
  command -v python3 >/dev/null \
    || fail "python3 is not on PATH; the Python example needs it (with venv) to install componentize-py"
  python3 -c 'import venv, ensurepip' 2>/dev/null \
    || fail "python3 has no venv/ensurepip module; install it (e.g. apt-get install python3-venv)"
  echo "setup: installing componentize-py $COMPONENTIZE_PY_VERSION into $venv" >&2
  # A half-made venv from an interrupted run is made again.
  rm -rf "$venv"
  python3 -m venv "$venv" || fail "python3 -m venv $venv failed"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    "componentize-py==$COMPONENTIZE_PY_VERSION" \
    || fail "pip could not install componentize-py $COMPONENTIZE_PY_VERSION from PyPI"
fi

for dir in js-hello http-hello; do
  lock="$here/$dir/package-lock.json"
  stamp="$here/$dir/node_modules/.pitstop-setup.sha256"
  want="$(sha256sum "$lock" | cut -d' ' -f1)"
  if [[ "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
    command -v node >/dev/null && command -v npm >/dev/null \
      || fail "node and npm are not on PATH; the JavaScript examples need node >= 18 with npm"
    major="$(node -p 'process.versions.node.split(".")[0]')"
    [[ "$major" -ge 18 ]] || fail "node $(node --version) is too old; the JavaScript examples need node >= 18"
    echo "setup: npm ci in examples/$dir" >&2
    (cd "$here/$dir" && npm ci --no-audit --no-fund --loglevel=error) \
      || fail "npm ci in examples/$dir failed"
    echo "$want" >"$stamp"
  fi
done
