#!/usr/bin/env bash
# The `load` runner against the independent tools, on the same machine, in one session:
#   1. the highest request rate: `load` vs Locust (one process), the seeds' BurstAgent, 5 users;
#   2. a fixed arrival rate: `load --rate` vs oha `-q`, the same request, p50 (and p99) side by side.
# Rounds alternate between the tools and the medians are printed (this machine's latency drifts).
# Needs: oha (`cargo install oha`), locust (`pip install locust`), the dataset (`cargo run --release --bin setup`).
# Usage: setup/compare-load.sh [ROUNDS] [RATE]   (defaults 3 rounds, 200/s)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
rounds=${1:-3}
rate=${2:-200}
port=${CAPBENCH_COMPARE_PORT:-18000}
for tool in oha locust; do
    command -v "$tool" >/dev/null || { echo "error: $tool is not installed (cargo install oha / pip install locust)" >&2; exit 1; }
done
cargo build --release --quiet --bin serve --bin load
work=$(mktemp -d)
serve_pid=
cleanup() { [ -n "$serve_pid" ] && kill "$serve_pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

start_serve() { # $1: read limit per minute
    [ -n "$serve_pid" ] && { kill "$serve_pid"; wait "$serve_pid" 2>/dev/null || true; }
    CAPBENCH_ADDR=127.0.0.1:$port RATE_LIMIT_READ_PER_MINUTE=$1 target/release/serve >"$work/serve.log" 2>&1 &
    serve_pid=$!
    for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && return; sleep 0.2; done
    echo "error: serve did not start: $(tail -1 "$work/serve.log")" >&2; exit 1
}
median() { python3 -c 'import sys,statistics; print("%.3f" % statistics.median(float(x) for x in sys.argv[1:]))' "$@"; }

# 1. Highest rate, the seeds' BurstAgent (429 is an expected outcome), default limits.
start_serve 60
ours=(); theirs=()
for r in $(seq "$rounds"); do
    (cd "$work" && locust -f "$root/setup/locust/burst.py" --headless -u 5 -r 5 -t 15s --host "http://127.0.0.1:$port" --csv "locust$r" >/dev/null 2>&1)
    theirs+=("$(python3 -c 'import csv,sys; print([r for r in csv.DictReader(open(sys.argv[1])) if r["Name"]=="Aggregated"][0]["Requests/s"])' "$work/locust${r}_stats.csv")")
    target/release/load --target "http://127.0.0.1:$port" --scenario burst -u 5 -t 15s -q --csv "$work/load$r" >/dev/null 2>&1
    ours+=("$(python3 -c 'import csv,sys; print([r for r in csv.DictReader(open(sys.argv[1])) if r["Name"]=="Aggregated"][0]["Requests/s"])' "$work/load${r}_stats.csv")")
    echo "round $r: load ${ours[-1]} req/s, Locust ${theirs[-1]} req/s"
done
lo=$(median "${ours[@]}"); lc=$(median "${theirs[@]}")
echo "highest rate, BurstAgent × 5, 15 s, median of $rounds: load $lo req/s, Locust $lc req/s = $(python3 -c "print('%.1f' % ($lo/$lc))")×"

# 2. Fixed arrival rate, the same request (limits out of the way).
start_serve 100000000
key=$(curl -sf -X POST "http://127.0.0.1:$port/api/v1/keys" -H 'content-type: application/json' -d '{"email":"oha@test.invalid"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["api_key"])')
ours=(); ours_u=(); theirs=(); theirs_c=()
for r in $(seq "$rounds"); do
    oha -z 10s -q "$rate" -c 8 -m POST -H "X-API-Key: $key" -H 'Content-Type: application/json' -d '{"q":"test query"}' \
        --no-tui --output-format json "http://127.0.0.1:$port/api/v1/traces/search" >"$work/oha.json" 2>/dev/null
    theirs+=("$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["latencyPercentiles"]["p50"]*1e3)' "$work/oha.json")")
    oha -z 10s -q "$rate" -c 8 --latency-correction -m POST -H "X-API-Key: $key" -H 'Content-Type: application/json' -d '{"q":"test query"}' \
        --no-tui --output-format json "http://127.0.0.1:$port/api/v1/traces/search" >"$work/oha.json" 2>/dev/null
    theirs_c+=("$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["latencyPercentiles"]["p50"]*1e3)' "$work/oha.json")")
    target/release/load --target "http://127.0.0.1:$port" --scenario burst --rate "$rate/s" --max-in-flight 8 -t 10s -q >"$work/load.txt" 2>&1
    ours+=("$(awk '$1=="Aggregated" {print $4; exit}' "$work/load.txt")")
    ours_u+=("$(awk '$1=="Aggregated" && $2=="(uncorrected)" {print $5; exit}' "$work/load.txt")")
    echo "round $r: p50 load ${ours[-1]} ms (uncorrected ${ours_u[-1]}), oha ${theirs[-1]} ms (--latency-correction ${theirs_c[-1]})"
done
a=$(median "${ours[@]}"); au=$(median "${ours_u[@]}"); b=$(median "${theirs[@]}"); bc=$(median "${theirs_c[@]}")
echo "fixed rate $rate/s, median of $rounds: p50 load $a ms corrected / $au ms uncorrected; oha $bc ms corrected / $b ms uncorrected; corrected ratio $(python3 -c "print('%.2f' % ($a/$bc))"), uncorrected ratio $(python3 -c "print('%.2f' % ($au/$b))")"
