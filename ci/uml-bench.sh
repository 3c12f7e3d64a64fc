#!/bin/bash
# uml-bench.sh [BENCH OPTIONS...] - RSPLIB's rspregistrar and our rserpool-registrar under the same
# SCTP load, one after the other in one boot of user-mode Linux (ci/uml-run.sh: 1 vCPU, the same
# kernel for both), with the SCTP echo server as the ceiling (docs/benchmarking.md, "SCTP in
# user-mode Linux"; figures in docs/performance.md). Needs the release build:
#   cargo build --release -p rserpool-bench -p rserpool-registrar
# and rspregistrar (Debian package rsplib-registrar), ip (iproute2), ci/uml-install.sh's kernel.
#
# In the guest: a dummy interface with 192.0.2.1 (RSPLIB refuses loopback addresses in
# registrations, so the PEs register the address their associations come from, 192.0.2.1);
# rspregistrar on sctp://192.0.2.1:3863 and our registrar (one worker, default profile, started
# as an operator would) on sctp://192.0.2.1:3873, side by side; then, ROUNDS times,
# `rserpool-bench resolve` against rspregistrar, the same against ours with --compare-echo (the
# SCTP echo server on 127.0.0.1), and `register` likewise; then a table of ops/s with the ratios
# ours/rspregistrar, ours/echo and rspregistrar/echo. The runs' own options come after the script's name and
# replace the defaults below (they apply to every run, resolve and register alike).
#
# Knobs: ROUNDS (3: the runs are repeated, the table gives each and the median ratios),
# OURS (sctp: our registrar on kernel SCTP; sctp-udp: on its own SCTP in UDP, sctp+udp:// port
# 9899, which the bench's client and echo then speak too, while rspregistrar stays on kernel
# SCTP: issue 20's comparison), BENCH_DIR (target/release), UML_MEM, UML_TIMEOUT as
# ci/uml-run.sh takes them.
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH_DIR=${BENCH_DIR:-$PWD/target/release}
ROUNDS=${ROUNDS:-3}
OURS=${OURS:-sctp}

if [ "${UML_BENCH_GUEST:-}" != 1 ]; then
    for bin in rserpool-bench rserpool-registrar; do
        [ -x "$BENCH_DIR/$bin" ] || {
            echo "uml-bench: no $BENCH_DIR/$bin: cargo build --release -p rserpool-bench -p rserpool-registrar" >&2
            exit 2
        }
    done
    command -v rspregistrar >/dev/null || { echo "uml-bench: no rspregistrar (apt-get install rsplib-registrar)" >&2; exit 2; }
    command -v ip >/dev/null || { echo "uml-bench: no ip (apt-get install iproute2)" >&2; exit 2; }
    echo "host CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) cores; the guest has 1 vCPU"
    export UML_BENCH_GUEST=1 BENCH_DIR ROUNDS OURS
    exec ci/uml-run.sh /bin/bash "$PWD/ci/uml-bench.sh" "$@"
fi

# --- in the guest ---
grep -q "User Mode Linux" /proc/cpuinfo || { echo "uml-bench: not in user-mode Linux" >&2; exit 2; }
ADDR=192.0.2.1
RSP_ASAP=3863 RSP_ENRP=9901 OUR_ASAP=3873 OUR_UDP=9899
case $OURS in
    sctp) OUR_URL=sctp://$ADDR:$OUR_ASAP ;;
    sctp-udp) OUR_URL=sctp+udp://$ADDR:$OUR_UDP ;;
    *) echo "uml-bench: OURS is sctp or sctp-udp, not $OURS" >&2; exit 2 ;;
esac
BENCH=$BENCH_DIR/rserpool-bench
REGISTRAR=$BENCH_DIR/rserpool-registrar
# The same load for both: 100 pools of 3 PEs (RSPLIB answers at most 3 PEs a resolution, so both
# answer every resolution with the whole pool), 16 associations x 16 requests in flight.
if [ $# -gt 0 ]; then SHAPE=("$@"); else SHAPE=(--connections 16 --pipeline 16 --duration 5 --warmup 1); fi
RESOLVE=(resolve --pools 100 --pool-elements 3)
REGISTER=(register --pools 100 --pes-per-connection 1)
OUT=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$OUT"; }
trap cleanup EXIT

ip link add rsp0 type dummy
ip addr add "$ADDR/24" dev rsp0
ip link set rsp0 up
echo "guest: $(uname -r), $(grep -c ^processor /proc/cpuinfo) vCPU; $ADDR on a dummy interface"

# Waits until something listens for SCTP on $1 (the kernel's table of SCTP endpoints).
await_sctp() {
    local port_hex i
    port_hex=$(printf '%d' "$1")
    for i in $(seq 1 100); do
        if awk -v p="$port_hex" 'NR > 1 && $6 == p { found = 1 } END { exit !found }' /proc/net/sctp/eps 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    echo "uml-bench: nothing listens on SCTP port $1" >&2
    return 1
}

# Waits until a UDP socket is bound to port $1 (/proc/net/udp, the port in hex).
await_udp() {
    local port_hex i
    port_hex=$(printf '%04X' "$1")
    for i in $(seq 1 100); do
        if grep -q ":$port_hex " /proc/net/udp 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    echo "uml-bench: nothing bound to UDP port $1" >&2
    return 1
}

# bench NAME ARGS...: runs rserpool-bench with ARGS and --json into $OUT/NAME.json.
bench() {
    local name=$1
    shift
    echo "== $name: rserpool-bench $*"
    "$BENCH" "$@" --json --quiet > "$OUT/$name.json"
}

# Both registrars run side by side, idle but for the run that loads one of them; each round
# loads rspregistrar, then ours (and the echo server right after ours), resolve then register.
rspregistrar -asap=$ADDR:$RSP_ASAP -enrp=$ADDR:$RSP_ENRP -logcolor=off -loglevel=1 > "$OUT/rsp.log" 2>&1 &
pids+=($!)
"$REGISTRAR" --workers 1 --profile default --asap "$OUR_URL" --metrics 127.0.0.1:0 \
    > "$OUT/ours.log" 2>&1 &
pids+=($!)
await_sctp $RSP_ASAP
if [ "$OURS" = sctp ]; then await_sctp $OUR_ASAP; else await_udp $OUR_UDP; fi
echo "ours: $OUR_URL"

for round in $(seq 1 "$ROUNDS"); do
    for scenario in resolve register; do
        if [ $scenario = resolve ]; then args=("${RESOLVE[@]}"); else args=("${REGISTER[@]}"); fi
        bench "rsp-$scenario-$round" "${args[@]}" --registrar sctp://$ADDR:$RSP_ASAP "${SHAPE[@]}"
        bench "ours-$scenario-$round" "${args[@]}" --registrar "$OUR_URL" "${SHAPE[@]}" --compare-echo
    done
done

python3 - "$OUT" "$ROUNDS" <<'PY'
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
def load(name):
    with open(f"{out}/{name}.json") as f:
        return json.load(f)
print()
print(f"{'round':<5} {'scenario':<9} {'target':<13} {'ops/s':>7} {'p50 us':>8} {'p99 us':>8} {'errors':>6} "
      f"{'reply B':>7}  totals")
ratios = {}
for round in range(1, rounds + 1):
    for scenario in ("resolve", "register"):
        rsp = load(f"rsp-{scenario}-{round}")
        both = load(f"ours-{scenario}-{round}")
        ours, echo = both["scenario"], both["echo"]
        for label, r in (("rspregistrar", rsp), ("ours", ours), ("echo", echo)):
            t = r["totals"]
            totals = ", ".join(f"{k} {v}" for k, v in t.items() if v)
            print(f"{round:<5} {scenario:<9} {label:<13} {r['ops_per_s']:>7.0f} "
                  f"{r['latency_us']['p50']:>8.0f} {r['latency_us']['p99']:>8.0f} {r['errors']:>6} "
                  f"{r['mean_reply_bytes']:>7.0f}  {totals}")
        o, p, e = ours["ops_per_s"], rsp["ops_per_s"], echo["ops_per_s"]
        print(f"{round:<5} {scenario:<9} ratios: ours/rspregistrar {o / p:.2f}, ours/echo {o / e:.2f}, "
              f"rspregistrar/echo {p / e:.2f}")
        for key, value in (("ours/rspregistrar", o / p), ("ours/echo", o / e), ("rspregistrar/echo", p / e)):
            ratios.setdefault((scenario, key), []).append(value)
if rounds > 1:
    print()
    for (scenario, key), values in ratios.items():
        print(f"median of {rounds} rounds: {scenario:<9} {key:<18} {statistics.median(values):.2f} "
              f"(from {min(values):.2f} to {max(values):.2f})")
PY
