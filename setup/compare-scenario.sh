#!/usr/bin/env bash
# The scenario engine's cost: the highest request rate of the seeds' BurstAgent × 5 against `serve`
# (429 is an expected outcome), in alternating rounds of
#   1. `load` built at REV, before the scenario engine (the built-in kinds were Rust code),
#   2. `load` now, `--scenario burst` (the built-in, which is scenarios/burst.toml),
#   3. `load` now, `--scenario scenarios/burst.toml` (the file, read at run time),
#   4. Locust (one process) on the same flow;
# and prints the medians and their ratios (the issue's targets: 2 ≥ 0.9 × 1, 2 ≥ 10 × 4).
# Needs: locust (`pip install locust`; or LOCUST=/path/to/locust). `serve` runs on a small dataset of its
# own (CAPBENCH_ROWS, default 2000 × CAPBENCH_DIMS 64: the BurstAgent's answers are mostly 429s anyway).
# TARGET=fixed measures the generators' own ceiling instead: the target is examples/fixed_target.rs (the
# same API with fixed answers: a key, then 429s) pinned to CPU 1, and every generator is pinned to CPU 0 —
# one core each, so neither the target nor core sharing sets the number (`taskset`, util-linux).
# Usage: [TARGET=serve|fixed] setup/compare-scenario.sh [ROUNDS] [REV] [SECONDS]   (defaults 3, 519d6be, 15)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
rounds=${1:-3}
rev=${2:-519d6be}
secs=${3:-15}
port=${CAPBENCH_COMPARE_PORT:-18001}
locust=${LOCUST:-locust}
target=${TARGET:-serve}
case $target in
    serve) pin=() ;;
    fixed) command -v taskset >/dev/null || { echo "error: TARGET=fixed needs taskset (apt install util-linux)" >&2; exit 1; }
           [ "$(nproc)" -ge 2 ] || { echo "error: TARGET=fixed needs 2 cores (one for the target, one for the generators)" >&2; exit 1; }
           pin=(taskset -c 0) ;;
    *) echo "error: TARGET must be serve or fixed, not $target" >&2; exit 1 ;;
esac
command -v "$locust" >/dev/null || { echo "error: locust is not installed (pip install locust, or LOCUST=…)" >&2; exit 1; }
old=target/compare/load-$rev
if [ ! -x "$old" ]; then
    tree=$(mktemp -d)
    git worktree add -f --detach "$tree" "$rev" >/dev/null
    (cd "$tree" && CARGO_TARGET_DIR="$root/target" cargo build --release --quiet --bin load)
    mkdir -p target/compare && cp target/release/load "$old"
    git worktree remove --force "$tree"
fi
cargo build --release --quiet --bin serve --bin load --example fixed_target
work=$(mktemp -d)
serve_pid=
cleanup() { [ -n "$serve_pid" ] && kill "$serve_pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
if [ "$target" = fixed ]; then
    taskset -c 1 target/release/examples/fixed_target "127.0.0.1:$port" >"$work/serve.log" 2>&1 &
else
    CAPBENCH_ROWS=${CAPBENCH_ROWS:-2000} CAPBENCH_DIMS=${CAPBENCH_DIMS:-64} CAPBENCH_ADDR=127.0.0.1:$port RATE_LIMIT_READ_PER_MINUTE=60 target/release/serve >"$work/serve.log" 2>&1 &
fi
serve_pid=$!
for _ in $(seq 600); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.5; done
curl -sf "http://127.0.0.1:$port/health" >/dev/null || { echo "error: serve did not start: $(tail -1 "$work/serve.log")" >&2; exit 1; }
rps() { python3 -c 'import csv,sys; r=[r for r in csv.DictReader(open(sys.argv[1])) if r["Name"]=="Aggregated"][0]; print(r["Requests/s"] if int(r["Failure Count"])==0 else "failed")' "$1"; }
median() { python3 -c 'import sys,statistics; print("%.0f" % statistics.median(float(x) for x in sys.argv[1:]))' "$@"; }
a=(); b=(); c=(); d=()
for r in $(seq "$rounds"); do
    "${pin[@]}" "$old" --target "http://127.0.0.1:$port" --scenario burst -u 5 -t "${secs}s" -q --csv "$work/old$r" >/dev/null 2>&1
    a+=("$(rps "$work/old${r}_stats.csv")")
    "${pin[@]}" target/release/load --target "http://127.0.0.1:$port" --scenario burst -u 5 -t "${secs}s" -q --csv "$work/new$r" >/dev/null 2>&1
    b+=("$(rps "$work/new${r}_stats.csv")")
    "${pin[@]}" target/release/load --target "http://127.0.0.1:$port" --scenario scenarios/burst.toml -u 5 -t "${secs}s" -q --csv "$work/file$r" >/dev/null 2>&1
    c+=("$(rps "$work/file${r}_stats.csv")")
    (cd "$work" && "${pin[@]}" "$locust" -f "$root/setup/locust/burst.py" --headless -u 5 -r 5 -t "${secs}s" --host "http://127.0.0.1:$port" --csv "locust$r" >/dev/null 2>&1)
    d+=("$(rps "$work/locust${r}_stats.csv")")
    echo "round $r: load@$rev ${a[-1]}, load ${b[-1]}, load (file) ${c[-1]}, Locust ${d[-1]} req/s"
done
ma=$(median "${a[@]}"); mb=$(median "${b[@]}"); mc=$(median "${c[@]}"); md=$(median "${d[@]}")
echo "BurstAgent × 5 against $target, ${secs} s, median of $rounds: load@$rev $ma, load $mb, load (file) $mc, Locust $md req/s"
python3 -c "import sys; a,b,c,d=map(float,sys.argv[1:]); print('scenario engine / built-in Rust kinds: %.3f (built-in), %.3f (file); load / Locust: %.1f×' % (b/a, c/a, b/d))" "$ma" "$mb" "$mc" "$md"
