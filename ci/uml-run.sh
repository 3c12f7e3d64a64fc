#!/bin/bash
# uml-run.sh BINARY [ARGS...]  - run BINARY inside User-Mode Linux (Debian unstable's user-mode-linux,
# kernel 7.x, installed by ci/uml-install.sh) with kernel SCTP loaded; also a cargo target runner:
#   CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER=$PWD/ci/uml-run.sh cargo test --test kernel_sctp
# Guest root = host "/" via hostfs, READ-ONLY. Writable: $PWD, cargo's target dir (when BINARY lives
# in one), $CARGO_TARGET_DIR, $UMLRUN_RW. Guest /tmp /run /dev/shm: tmpfs. 1 vCPU, syscalls ~50 us.
# stdout+stderr of BINARY stream to stdout (not a tty); its exit code is ours (125: guest died/timeout).
# linux.uml itself occasionally dies by SIGABRT under host load before the guest reports a result;
# then the boot is retried once (a failing test reports a result, so it is never retried).
# Knobs: UMLRUN_RW, UML_MEM (512M), UML_TIMEOUT (1200 s), UMLRUN_MODULES, UML_EXTRA, UML_HOME, UML_BIN.
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 BINARY [ARGS...]" >&2; exit 2; }
UML=${UML_BIN:-${UML_HOME:-/opt/uml-sctp}/linux.uml}
B=/bin/busybox
[ -x "$UML" ] && [ -x "$B" ] || { echo "uml-run: no $UML or $B: run ci/uml-install.sh first" >&2; exit 2; }
case "$UML" in /usr/bin/*) MODROOT=/usr/lib/uml/modules;; *) MODROOT=$(dirname "$UML")/usr/lib/uml/modules;; esac
VER=$(ls "$MODROOT" | head -1); M="$MODROOT/$VER"
# modules to load (with what they depend on, from modules.dep, dependencies first); built-in ones skipped
MODS=""
want() { local m="kernel/$1.ko" deps d
  grep -q "^$m:" "$M/modules.dep" || return 0
  deps=$(grep "^$m:" "$M/modules.dep" | cut -d: -f2)
  for d in $(echo $deps | tr ' ' '\n' | tac); do case " $MODS " in *" $d "*) ;; *) MODS="$MODS $d";; esac; done
  case " $MODS " in *" $m "*) ;; *) MODS="$MODS $m";; esac; }
for m in net/sctp/sctp drivers/net/veth drivers/net/dummy ${UMLRUN_MODULES:-}; do want "$m"; done
case "$1" in */*) BIN=$(cd "$(dirname "$1")" && pwd)/$(basename "$1");; *) BIN=$(command -v "$1");; esac; shift
W=$(mktemp -d "${TMPDIR:-/tmp}/uml-run.XXXXXX")
trap 'rm -rf "$W"' EXIT
TGT=""; case "$BIN" in */target/*) TGT="${BIN%%/target/*}/target";; esac
RW=$(for d in "$PWD" ${CARGO_TARGET_DIR:-} $TGT ${UMLRUN_RW:-}; do readlink -f "$d"; done | grep -vx / | sort -u | tr '\n' ' ')

# environment, cwd and command for the guest (run by the host's own /bin/bash, seen through hostfs)
{ export -p | grep -vE '^declare -x (BASH|SHELLOPTS|BASHOPTS|SHLVL|_=|OLDPWD|TERM=)'
  printf 'cd %q\n' "$PWD"
  printf '{'; printf ' %q' "$BIN" "$@"; printf '; } 2>&1 | cat; exit ${PIPESTATUS[0]}\n'; } > "$W/cmd.sh"

cat > "$W/init" <<INIT
#!$B sh
$B mount -t proc proc /proc; $B mount -t sysfs sys /sys; $B mount -t devtmpfs dev /dev 2>/dev/null
for d in /tmp /run /dev/shm; do $B mkdir -p \$d; $B mount -t tmpfs tmpfs \$d; done
$B mkdir -p /dev/pts; $B mount -t devpts devpts /dev/pts
for d in $RW $W; do $B mkdir -p "\$d"; $B mount -t hostfs -o "\$d" hostfs "\$d" || echo "uml-run: cannot mount \$d" >&2; done
for m in $MODS; do
  $B insmod "$M/\$m" || echo "uml-run: insmod \$m failed" >&2
done
$B ip link set lo up
$B stty -onlcr 2>/dev/null
/bin/bash $W/cmd.sh < /dev/null
echo \$? > $W/rc
$B sync
$B poweroff -f
INIT
chmod +x "$W/init"

# con0 = our stdout only (no kernel chatter); UML's host-side banner goes to stderr -> file
for attempt in 1 2; do
  rm -f "$W/rc"
  set +e
  timeout "${UML_TIMEOUT:-1200}" "$UML" mem="${UML_MEM:-512M}" root=/dev/root rootfstype=hostfs rootflags=/ ro \
    init="$W/init" con=null con0=null,fd:1 loglevel=1 ${UML_EXTRA:-} \
    < /dev/null 2> "$W/uml.stderr" | grep --line-buffered -v -e '^reboot: System halted' -e '^reboot: Power down'
  uml_status=${PIPESTATUS[0]}
  set -e
  if [ -s "$W/rc" ]; then exit "$(cat "$W/rc")"; fi
  # 134 = 128 + SIGABRT (timeout passes the signal on)
  if [ "$uml_status" -eq 134 ] && [ "$attempt" -eq 1 ]; then
    echo "uml-run: linux.uml aborted (SIGABRT) before the guest reported a result; booting once more" >&2
    continue
  fi
  break
done
echo "uml-run: guest did not report an exit code (linux.uml exit status $uml_status: crash, or timeout" \
  "after ${UML_TIMEOUT:-1200}s if 124); UML stderr:" >&2
tail -20 "$W/uml.stderr" >&2
exit 125
