#!/bin/bash
# uml-syscalls.sh - system calls per handle resolution over kernel SCTP, counted with `strace -c`
# in one boot of user-mode Linux (ci/uml-run.sh): our registrar on its io_uring driver, on its
# epoll driver, and RSPLIB's rspregistrar, each under the same `rserpool-bench resolve` load
# (32 one-to-one associations x 16 in flight, as issue 16 sets it, 3 s after 1 s of warm-up; strace attached to the
# registrar for the whole run, its threads included). Prints, per registrar, the resolutions
# answered, the system calls by name and the calls per resolution (issue 16; figures in
# docs/performance.md, "SCTP in user-mode Linux"). Needs the release build:
#   cargo build --release -p rserpool-bench -p rserpool-registrar
# and strace, rspregistrar (rsplib-registrar), ip (iproute2), ci/uml-install.sh's kernel.
# strace slows every call it sees: the counts per resolution are what to read, not the rates.
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH_DIR=${BENCH_DIR:-$PWD/target/release}

if [ "${UML_SYSCALLS_GUEST:-}" != 1 ]; then
    for bin in rserpool-bench rserpool-registrar; do
        [ -x "$BENCH_DIR/$bin" ] || {
            echo "uml-syscalls: no $BENCH_DIR/$bin: cargo build --release -p rserpool-bench -p rserpool-registrar" >&2
            exit 2
        }
    done
    for tool in strace rspregistrar ip; do
        command -v $tool >/dev/null || { echo "uml-syscalls: no $tool (apt-get install strace rsplib-registrar iproute2)" >&2; exit 2; }
    done
    export UML_SYSCALLS_GUEST=1 BENCH_DIR
    exec ci/uml-run.sh /bin/bash "$PWD/ci/uml-syscalls.sh" "$@"
fi

# --- in the guest ---
ADDR=192.0.2.1
BENCH=$BENCH_DIR/rserpool-bench
REGISTRAR=$BENCH_DIR/rserpool-registrar
OUT=$(mktemp -d)
ip link add rsp0 type dummy
ip addr add "$ADDR/24" dev rsp0
ip link set rsp0 up
echo "guest: $(uname -r), $(grep -c ^processor /proc/cpuinfo) vCPU"

# count NAME PORT COMMAND...: starts COMMAND (a registrar listening for SCTP on PORT), attaches
# strace -c to it, runs the resolve load, stops both and prints the counts.
count() {
    local name=$1 port=$2
    shift 2
    "$@" > "$OUT/$name.log" 2>&1 &
    local pid=$!
    for _ in $(seq 1 100); do
        awk -v p="$port" 'NR > 1 && $6 == p { f = 1 } END { exit !f }' /proc/net/sctp/eps && break
        sleep 0.1
    done
    # The bench's setup registrations and the warm-up are counted too: they are few against the
    # resolutions (30 registrations against tens of thousands of resolutions).
    strace -c -f -q -p "$pid" -o "$OUT/$name.strace" &
    local tracer=$!
    sleep 0.5
    "$BENCH" resolve --registrar "sctp://$ADDR:$port" --pools 10 --pool-elements 3 \
        --connections 32 --pipeline 16 --duration 3 --warmup 1 --json --quiet > "$OUT/$name.json"
    kill -INT "$tracer"
    wait "$tracer" || true
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    python3 - "$name" "$OUT/$name.json" "$OUT/$name.strace" <<'PY'
import json, sys
name, report, trace = sys.argv[1:]
with open(report) as f:
    r = json.load(f)
answered = r["totals"].get("resolutions_found", 0) + r["totals"].get("resolutions_unknown", 0)
calls = {}
for line in open(trace):
    parts = line.split()
    if len(parts) >= 5 and parts[-1] not in ("total", "syscall") and parts[3].isdigit():
        calls[parts[-1]] = int(parts[3])
total = sum(calls.values())
# User-mode Linux has no vDSO: each clock_gettime is a system call here, none on hardware.
clockless = total - calls.get("clock_gettime", 0)
top = ", ".join(f"{k} {v}" for k, v in sorted(calls.items(), key=lambda kv: -kv[1])[:6])
print(f"{name:<22} resolutions {answered:>7}  system calls {total:>8}  per resolution "
      f"{total / max(answered, 1):.3f}, without clock_gettime {clockless / max(answered, 1):.3f}"
      f"  ({top})")
PY
}

count ours-io_uring 3873 "$REGISTRAR" --workers 1 --profile default --driver io-uring \
    --asap "sctp://$ADDR:3873" --metrics 127.0.0.1:0
count ours-epoll 3874 "$REGISTRAR" --workers 1 --profile default --driver epoll \
    --asap "sctp://$ADDR:3874" --metrics 127.0.0.1:0
count rspregistrar 3863 rspregistrar "-asap=$ADDR:3863" "-enrp=$ADDR:9901" -logcolor=off -loglevel=1
