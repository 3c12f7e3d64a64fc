#!/bin/bash
# capture-udp-encap.sh OUTDIR - records rsplib-udp-encap.pcap (net/tests/sctp_packets.rs): RSPLIB's
# kernel SCTP with every packet encapsulated in UDP port 9899 (RFC 6951), for which Linux computes
# the CRC32c in software, so the capture holds real checksums (plain SCTP over loopback or dummy
# interfaces leaves them to an offload that never happens: zero in the capture).
# Runs itself in user-mode Linux (ci/uml-install.sh, ci/uml-run.sh). Needs the Debian packages
# rsplib-registrar, rsplib-tools, iproute2 and tcpdump on the host (the guest sees its files).
# Scenario, about 25 s: two registrars that are ENRP peers, two PEs in one pool, a PU echoing three
# lines, one PE deregistering, the other killed, then one registrar killed.
set -u
if [ "${1:-}" = "--inside" ]; then
  O=$2; cd "$O"
  echo 9899 > /proc/sys/net/sctp/udp_port
  echo 9899 > /proc/sys/net/sctp/encap_port
  ip link add dummy0 type dummy 2>/dev/null; ip link set dummy0 up  # dummy.ko may have made it
  for a in 1 2 3 4; do ip addr add 192.0.2.$a/24 dev dummy0; done
  tcpdump -i any -s 0 -U -w "$O/rsplib-udp-encap.pcap" 'ip and udp port 9899' \
    2>tcpdump.log & T=$!
  sleep 1
  fast="-peerheartbeatcycle=1000 -peermaxtimelastheard=2500 -peermaxtimenoresponse=1000"
  fast="$fast -endpointkeepalivetransmissioninterval=1000 -endpointkeepalivetimeoutinterval=1000"
  pr() { rspregistrar -asap=192.0.2.$1:3863 -enrp=192.0.2.$1:9901 -identifier=$2 $fast \
      -asapannounce=off -enrpannounce=off -peer=192.0.2.$3:9901 -logquiet >pr-$2.log 2>&1 &
    echo $!; }
  A=$(pr 1 0x1111aaaa 2)
  B=$(pr 2 0x2222bbbb 1)
  sleep 3
  pe() { rspserver -registrar=192.0.2.$1:3863 -local=192.0.2.$2 -echo -poolhandle=EchoPool \
      -identifier=$3 -asapannounce=off -rereginterval=3000 -quiet >pe-$3.log 2>&1 & echo $!; }
  P1=$(pe 1 3 0x0000e001)
  P2=$(pe 2 4 0x0000e002)
  sleep 3
  ( for i in 1 2 3; do echo "hello $i"; sleep 0.5; done; sleep 1 ) | \
    timeout 10 rspterminal -registrar=192.0.2.2:3863 -poolhandle=EchoPool -asapannounce=off \
    >pu.log 2>&1
  kill -INT "$P2"; sleep 2
  kill -KILL "$P1"; sleep 4
  kill -KILL "$A"; sleep 4
  kill -INT "$B"; sleep 1
  kill -INT $T; wait $T
  grep -E 'Checksum|InSCTP|OutSCTP' /proc/net/sctp/snmp
  echo "PU echoes: $(grep -a -c 'from PE' pu.log)"
  exit 0
fi
O=$(readlink -f "${1:?usage: $0 OUTDIR}"); mkdir -p "$O"
here=$(cd "$(dirname "$0")" && pwd)
UMLRUN_RW="$O" UML_TIMEOUT=180 "$here/../../../ci/uml-run.sh" \
  /bin/bash "$here/capture-udp-encap.sh" --inside "$O"
