#!/usr/bin/env bash
# Regenerates the Python SDK's copy of the evos WIT and the type stubs of
# the bindings componentize-py generates for a plugin (`wit_world`,
# `componentize_py_types`), with the pinned componentize-py. CI runs it and
# fails when the committed files differ: the SDK always matches the
# contract.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
want="$(sed -n 's/^componentize-py==\(.*\)$/\1/p' "$here/requirements-build.txt")"
have="$(componentize-py --version 2>/dev/null | awk '{print $2}')"
if [ "$have" != "$want" ]; then
    echo "componentize-py $want is needed (found: ${have:-none}); run: pip install -r $here/requirements-build.txt" >&2
    exit 1
fi
rm -rf "$here/src/evos_sdk/wit" "$here/stubs"
mkdir -p "$here/src/evos_sdk/wit" "$here/stubs/componentize_py_types"
cp "$here"/../../wit/*.wit "$here/src/evos_sdk/wit/"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
# The `host` world holds every import and export: stubs for every kind.
componentize-py -d "$here/src/evos_sdk/wit" -w host bindings "$tmp"
(cd "$tmp" && find wit_world -name '*.py' | while read -r f; do
    mkdir -p "$here/stubs/$(dirname "$f")"
    cp "$f" "$here/stubs/${f%.py}.pyi"
done)
cp "$tmp/componentize_py_types.py" "$here/stubs/componentize_py_types/__init__.pyi"
