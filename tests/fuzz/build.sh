#!/usr/bin/env bash
# Builds the libFuzzer harnesses (fuzz_gguf, fuzz_model) with clang, ASan and UBSan into $1
# (default build/fuzz). Needs Debian's clang and libclang-rt-<version>-dev.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
out="${1:-$root/build/fuzz}"
mkdir -p "$out/obj"
cxx="${CXX:-clang++}"
flags=(-std=c++17 -O1 -g -Wno-psabi -fno-omit-frame-pointer -fsanitize=fuzzer-no-link,address,undefined
       -fno-sanitize-recover=undefined -I"$root/native/include" -I"$root/native/src" -I"$root/tests/fuzz")
# An object is rebuilt when its source or any header is newer than it.
newest_header="$(ls -t "$root"/native/include/*.h "$root"/native/src/*.h "$root"/native/src/*/*.h | head -1)"
objs=()
for src in "$root"/native/src/*.cpp "$root"/native/src/quant/*.cpp "$root"/native/src/cpu/*.cpp; do
    obj="$out/obj/$(basename "$(dirname "$src")")_$(basename "$src" .cpp).o"
    if [[ ! -f "$obj" || "$src" -nt "$obj" || "$newest_header" -nt "$obj" ]]; then
        "$cxx" "${flags[@]}" -c "$src" -o "$obj" &
    fi
    objs+=("$obj")
done
wait
for harness in fuzz_gguf fuzz_model; do
    "$cxx" "${flags[@]}" -fsanitize=fuzzer "$root/tests/fuzz/$harness.cpp" "${objs[@]}" -lpthread -o "$out/$harness"
done
echo "$out/fuzz_gguf $out/fuzz_model"
