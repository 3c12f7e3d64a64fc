#!/usr/bin/env bash
# uml-install.sh - installs what ci/uml-run.sh needs to run tests against real kernel SCTP on a host
# whose kernel has none: busybox-static and patchelf (Debian 12 packages), and User-Mode Linux.
#
# The UML kernel is Debian unstable's `user-mode-linux` (7.x), unpacked with unstable's C library
# into $UML_HOME (default /opt/uml-sctp) and pointed at that library with patchelf; nothing of the
# system is replaced and the system's apt sources are untouched (a private apt configuration reads
# unstable's index). Debian 12's own user-mode-linux (6.1) dies at its first process on hosts whose
# CPU has AVX-512 ("ptrace set fp regs failed, errno = 14"); 7.x sizes the XSAVE area from the host.
# $UML_HOME must not lie under /tmp, /run or /dev/shm: the guest mounts tmpfs there.
# Does nothing when everything is installed. About 40 MB of download, 10 s.
set -euo pipefail
SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
UML_HOME=${UML_HOME:-/opt/uml-sctp}
# a fresh machine's mirror may fail once; retry after a pause
retry() { "$@" || { sleep 10; "$@"; }; }

if [ ! -x /bin/busybox ] || ! command -v patchelf >/dev/null; then
  echo "uml-install: installing busybox-static and patchelf"
  retry $SUDO apt-get update -qq
  retry $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    busybox-static patchelf >/dev/null
fi
if [ ! -x "$UML_HOME/linux.uml" ]; then
  echo "uml-install: installing Debian unstable's user-mode-linux into $UML_HOME"
  A=$(mktemp -d); mkdir -p "$A/lists/partial" "$A/cache/archives/partial"
  trap 'rm -rf "$A"' EXIT
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian unstable main" > "$A/sources.list"
  O=(-o Dir::Etc::sourcelist="$A/sources.list" -o Dir::Etc::sourceparts=- -o Dir::State::Lists="$A/lists"
     -o Dir::Cache="$A/cache" -o APT::Sandbox::User=root)
  retry $SUDO apt-get "${O[@]}" update -qq
  (cd "$A" && retry $SUDO apt-get "${O[@]}" download -qq user-mode-linux libc6 >/dev/null)
  $SUDO mkdir -p "$UML_HOME"
  for d in "$A"/user-mode-linux_*.deb "$A"/libc6_*.deb; do $SUDO dpkg-deb -x "$d" "$UML_HOME"; done
  L="$UML_HOME/usr/lib/x86_64-linux-gnu"
  $SUDO cp "$UML_HOME/usr/bin/linux.uml" "$UML_HOME/linux.uml.new"
  $SUDO patchelf --set-interpreter "$L/ld-linux-x86-64.so.2" --set-rpath "$L" "$UML_HOME/linux.uml.new"
  $SUDO mv "$UML_HOME/linux.uml.new" "$UML_HOME/linux.uml"
fi
echo "uml-install: $UML_HOME/linux.uml ready, kernel modules $(ls "$UML_HOME/usr/lib/uml/modules")"
