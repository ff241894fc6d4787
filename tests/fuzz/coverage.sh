#!/usr/bin/env bash
# Lists the core's functions a native fuzzer's corpus reaches (libFuzzer -print_coverage=1 over the
# corpus, no new inputs): "edges covered/total  function (arguments dropped)  file:line", for native/src only.
# Usage: tests/fuzz/coverage.sh gguf|model   (after tests/fuzz/run.sh has built it and grown the corpus)
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
name="${1:?usage: coverage.sh gguf|model}"
out="$root/build/fuzz"
"$out/fuzz_$name" -runs=0 -print_coverage=1 "$out/corpus/$name" "$out/seeds/gguf" 2>&1 |
    sed -n 's|^COVERED_FUNC: hits: [0-9]* edges: \([0-9/]*\) \(.*\) '"$root"'/\(native/src/[^ ]*\)$|\1\t\2\t\3|p' |
    sed 's/(\(anonymous namespace\))/{anon}/g; s/([^\t]*\t/\t/; s/{anon}/(anonymous)/g' | sort -t$'\t' -k3,3V
