#!/usr/bin/env bash
# Runs every fuzzer for SECONDS each (default 60), one after another, and prints one line per
# fuzzer: executions, coverage, and the crash files it wrote. Native harnesses: libFuzzer with ASan
# and UBSan (build.sh); Python harnesses: atheris (pip install atheris). Corpora grow in
# build/fuzz/corpus/<fuzzer>, findings land in build/fuzz/crashes; a finding that is a bug gets fixed
# and its input copied to tests/fuzz/regressions/ (tests/test_fuzz_regressions.py loads each one).
# Usage: tests/fuzz/run.sh [SECONDS] [FUZZER...]   (fuzzers: gguf model py_gguf py_tokenizer py_chat)
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
seconds="${1:-60}"
shift || true
fuzzers=(gguf model py_gguf py_tokenizer py_chat)
[[ $# -gt 0 ]] && fuzzers=("$@")
out="$root/build/fuzz"
here="$root/tests/fuzz"

# The Python side loads the core built here unless DGEMMA_LIBRARY names another.
if [[ -z "${DGEMMA_LIBRARY:-}" ]]; then
    cmake -S "$root" -B "$root/build/dev" -G Ninja >/dev/null && cmake --build "$root/build/dev" >/dev/null
    export DGEMMA_LIBRARY="$root/build/dev/libdgemma.so"
fi
mkdir -p "$out/crashes" "$out/logs"
# The libFuzzer harnesses (a clang build of the whole core) only when a native fuzzer is asked for.
if [[ " ${fuzzers[*]} " == *" gguf "* || " ${fuzzers[*]} " == *" model "* ]]; then
    "$here/build.sh" "$out" >/dev/null 2>"$out/logs/build.log" || { cat "$out/logs/build.log" >&2; exit 1; }
fi
python3 "$here/make_corpus.py" "$out/seeds"

# libFuzzer flags shared by all: a 2 GB memory ceiling and a 1 GB cap on any one allocation (so a
# small file that makes the loader allocate gigabytes is a finding), 10 s per input (a hang is one).
common=(-max_total_time="$seconds" -rss_limit_mb=2048 -malloc_limit_mb=1024 -timeout=10 -print_final_stats=1
        -artifact_prefix="$out/crashes/")
for name in "${fuzzers[@]}"; do
    corpus="$out/corpus/$name"
    mkdir -p "$corpus"
    case "$name" in
        gguf|model) cmd=("$out/fuzz_$name" -dict="$here/gguf.dict" "${common[@]}" "$corpus" "$out/seeds/gguf") ;;
        py_gguf|py_tokenizer) cmd=(python3 "$here/fuzz_$name.py" -dict="$here/gguf.dict" "${common[@]}" "$corpus" "$out/seeds/gguf") ;;
        py_chat) cmd=(python3 "$here/fuzz_$name.py" "${common[@]}" "$corpus" "$out/seeds/chat") ;;
        *) echo "unknown fuzzer '$name'" >&2; exit 2 ;;
    esac
    log="$out/logs/$name.log"
    status=0
    "${cmd[@]}" >"$log" 2>&1 || status=$?
    execs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')"
    cov="$(grep -o 'cov: [0-9]*' "$log" | tail -1 || true)"
    verdict="ok"
    [[ $status -ne 0 ]] && verdict="FINDING (exit $status): $(grep -o "Test unit written to .*" "$log" | head -1)"
    echo "$name: $execs executions, ${cov:-cov: ?}, $verdict (log: $log)"
done
