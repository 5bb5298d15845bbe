#!/usr/bin/env bash
# Regenerates the Python SDK's copy of the evos WIT and the type stubs of
# the bindings componentize-py generates for a plugin (`wit_world`,
# `componentize_py_types`), with the pinned componentize-py.
#
#   generate.sh           write them into this directory
#   generate.sh --check   write them elsewhere and fail if the committed
#                         ones differ (the tests run this: the SDK always
#                         matches the contract)
set -euo pipefail
sdk="$(cd "$(dirname "$0")" && pwd)"
if [ "${1:-}" = "--check" ]; then
    out="$(mktemp -d)"
    trap 'rm -rf "$out"' EXIT
    mkdir -p "$out/src/evos_sdk"
    EVOS_SDK_PY_OUT="$out" "$0"
    if ! diff -r "$sdk/stubs" "$out/stubs" >&2 || ! diff -r "$sdk/src/evos_sdk/wit" "$out/src/evos_sdk/wit" >&2; then
        echo "the Python SDK's WIT or stubs are out of date: run sdk/python/generate.sh" >&2
        exit 1
    fi
    exit 0
fi
here="${EVOS_SDK_PY_OUT:-$sdk}"
want="$(sed -n 's/^componentize-py==\(.*\)$/\1/p' "$sdk/requirements-build.txt")"
have="$(componentize-py --version 2>/dev/null | awk '{print $2}')"
if [ "$have" != "$want" ]; then
    echo "componentize-py $want is needed (found: ${have:-none}); run: pip install -r $sdk/requirements-build.txt" >&2
    exit 1
fi
rm -rf "$here/src/evos_sdk/wit" "$here/stubs"
mkdir -p "$here/src/evos_sdk/wit" "$here/stubs/componentize_py_types"
cp "$sdk"/../../wit/*.wit "$here/src/evos_sdk/wit/"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp" ${out:+"$out"}' EXIT
# The `host` world holds every import and export: stubs for every kind.
componentize-py -d "$here/src/evos_sdk/wit" -w host bindings "$tmp"
(cd "$tmp" && find wit_world -name '*.py' | while read -r f; do
    mkdir -p "$here/stubs/$(dirname "$f")"
    cp "$f" "$here/stubs/${f%.py}.pyi"
done)
cp "$tmp/componentize_py_types.py" "$here/stubs/componentize_py_types/__init__.pyi"
