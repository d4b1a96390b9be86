#!/usr/bin/env bash
# A profile-guided (PGO) release build of `keel` and of the engine benchmark.
#
# The engine's time is spread thinly over many short, branchy functions (docs/benchmarks.md,
# round 13), which is what profile-guided optimisation helps with: the compiler lays out and
# inlines the paths the profile shows as hot. Three steps:
#
#   1. build `keel` and the engine benchmark instrumented (`-Cprofile-generate`);
#   2. train them: the engine benchmark's generated flow (10 markets, 100,000 accounts), then a
#      served exchange driven through its TCP gateway by `keel load`, so the gateway's paths are
#      profiled too and not treated as cold;
#   3. merge the profiles and build both again with them (`-Cprofile-use`).
#
# Needs `llvm-profdata` of the same LLVM as rustc: `rustup component add llvm-tools`.
# Everything goes under target/pgo/; the ordinary build in target/ is left alone. Takes a few
# minutes. Prints where the optimised binaries are.
#
# Environment: KEEL_PGO_PORT (default 7799), the loopback port of the training server.
set -euo pipefail
cd "$(dirname "$0")/.."

host=$(rustc -vV | sed -n 's/^host: //p')
profdata="$(rustc --print sysroot)/lib/rustlib/$host/bin/llvm-profdata"
if [ ! -x "$profdata" ]; then
    echo "pgo-build: no llvm-profdata for this toolchain; run: rustup component add llvm-tools" >&2
    exit 1
fi

root="$PWD/target/pgo"
profiles="$root/profiles"
port="${KEEL_PGO_PORT:-7799}"
rm -rf "$profiles" "$root/train"
mkdir -p "$profiles" "$root/train"

# The absolute path of the engine benchmark's executable, from cargo's report of what it built.
bench_executable() {
    local path
    path=$(sed -n 's/^ *Executable benches\/engine.rs (\(.*\))$/\1/p')
    if [ -z "$path" ]; then
        echo "pgo-build: cargo did not report the engine benchmark's executable" >&2
        return 1
    fi
    case "$path" in
        /*) echo "$path" ;;
        *) echo "$PWD/$path" ;;
    esac
}

echo "pgo-build: 1/3 instrumented build" >&2
export RUSTFLAGS="-Cprofile-generate=$profiles"
cargo build --release --target-dir "$root/gen"
bench=$(cargo bench --bench engine --no-run --target-dir "$root/gen" 2>&1 | tee /dev/stderr | bench_executable)
# Build scripts and proc macros ran instrumented too; only the training runs count.
rm -f "$profiles"/*.profraw

echo "pgo-build: 2/3 training" >&2
KEEL_ENGINE_COMMANDS=1000000 KEEL_ENGINE_RATE=1000000 "$bench" --bench
"$root/gen/release/keel" serve --data-dir "$root/train/data" --port "$port" --flush buffered --duration 12 \
    > "$root/train/serve.log" 2>&1 &
server=$!
sleep 1
"$root/gen/release/keel" load --address "127.0.0.1:$port" --rate 100000 --duration 8
wait "$server"
"$profdata" merge -o "$root/keel.profdata" "$profiles"

echo "pgo-build: 3/3 optimised build" >&2
export RUSTFLAGS="-Cprofile-use=$root/keel.profdata"
cargo build --release --target-dir "$root/use"
bench=$(cargo bench --bench engine --no-run --target-dir "$root/use" 2>&1 | tee /dev/stderr | bench_executable)

echo "pgo-build: done" >&2
echo "keel:         $root/use/release/keel"
echo "engine bench: $bench (run with --bench)"
