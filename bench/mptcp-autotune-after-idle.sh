#!/usr/bin/env bash
# MPTCP receive-buffer autotuning stands still after idle, for about as long as the connection
# was idle (Linux 6.18; seen on 6.18.44). Plain TCP on the same links is not affected.
#
# A connection receives a few bytes, sits idle for I seconds, then receives bulk. The first
# receive-RTT sample its subflow takes afterwards spans the idle time: tcp_rcv_rtt_measure()
# starts timing one receive window at the first data segment, the window completes only once
# the bulk has brought a window's worth more, and tcp_rcv_rtt_update() takes a first sample as
# it is (old_sample == 0). mptcp_rcv_space_adjust() stores the largest subflow sample in
# msk->rcvq_space.rtt_us, grows the buffer once, starts a new measurement, and from then on
# returns early while `time < (msk->rcvq_space.rtt_us >> 3)`, before it reads the subflows'
# estimates again: the cached "RTT" is the idle time, so the next growth comes I seconds later.
# The subflow's own estimate is replaced by the next, smaller window sample within a window
# (a smaller win_dep sample replaces the old one), which is why tcp_rcv_space_adjust(), which
# reads tp->rcv_rtt_est on every call, heals at once. With the buffer stuck at its first step
# the subflows' buffers stay small too, and the bulk runs at a fraction of the link.
#
#   sudo bash bench/mptcp-autotune-after-idle.sh [--idle "0 2 4 8"] [--secs 12]
#
# It builds two namespaces (${BRAID_LAB_TAG}mpidle-snd, ${BRAID_LAB_TAG}mpidle-rcv) joined by
# two veth pairs (offloads off, no shaping), MPTCP with a second subflow joined over the second
# pair (as a pooled connection has). For each idle time, TCP and then MPTCP: the sender
# connects, sends 100 bytes, waits, then sends as fast as it can for --secs; the receiver reads
# everything and samples its SO_RCVBUF every 20 ms. Prints per case the goodput in the first
# 2 s of bulk and over all of it, the seconds of bulk until the receive buffer reached half of
# net.ipv4.tcp_rmem's maximum (a fresh MPTCP connection here gets there within a fraction of a
# second), and the buffer's first steps. TCP is shown for contrast: its buffer grows in several
# steps within the first second and stops where the rate needs no more. Needs root, iproute2,
# ethtool and python3; touches nothing outside its namespaces and removes them on exit. Exit
# status 0 when the stall was reproduced (MPTCP after the longest idle waits at least half of
# it before reaching that size, MPTCP without idle less than a second), 1 when not.
set -euo pipefail

IDLES="0 2 4 8" SECS=12
while [[ $# -gt 0 ]]; do
  case "$1" in
    --idle) IDLES="$2"; shift 2 ;;
    --secs) SECS="$2"; shift 2 ;;
    *) echo "unknown option $1 (use --idle \"0 2 4 8\", --secs N)" >&2; exit 2 ;;
  esac
done
[[ $EUID -eq 0 ]] || { echo "needs root (network namespaces)" >&2; exit 2; }

SND="${BRAID_LAB_TAG:-}mpidle-snd"
RCV="${BRAID_LAB_TAG:-}mpidle-rcv"
WORK=$(mktemp -d)
cleanup() {
  ip netns del "$SND" 2>/dev/null || true
  ip netns del "$RCV" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

ip netns add "$SND"
ip netns add "$RCV"
ip link add mpidle-a1 netns "$SND" type veth peer mpidle-b1 netns "$RCV"
ip link add mpidle-a2 netns "$SND" type veth peer mpidle-b2 netns "$RCV"
ip -n "$SND" addr add 10.77.0.1/24 dev mpidle-a1
ip -n "$RCV" addr add 10.77.0.2/24 dev mpidle-b1
ip -n "$SND" addr add 10.78.0.1/24 dev mpidle-a2
ip -n "$RCV" addr add 10.78.0.2/24 dev mpidle-b2
for ns in "$SND" "$RCV"; do
  ip -n "$ns" link set lo up
  ip netns exec "$ns" sysctl -qw net.mptcp.enabled=1
  ip -n "$ns" mptcp limits set subflows 2 add_addr_accepted 0
done
for i in "$SND:mpidle-a1" "$RCV:mpidle-b1" "$SND:mpidle-a2" "$RCV:mpidle-b2"; do
  ip -n "${i%%:*}" link set "${i#*:}" up
  ip netns exec "${i%%:*}" ethtool -K "${i#*:}" tso off gso off gro off >/dev/null
done
# The second subflow, from 10.78.0.1, reaches the receiver's 10.77.0.2 over the second pair.
ip -n "$SND" rule add from 10.78.0.1 table 100
ip -n "$SND" route add 10.77.0.0/24 via 10.78.0.2 dev mpidle-a2 table 100
ip -n "$SND" mptcp endpoint add 10.78.0.1 dev mpidle-a2 subflow
cap=$(($(ip netns exec "$RCV" cat /proc/sys/net/ipv4/tcp_rmem | awk '{print $3}') / 2))

cat >"$WORK/peer.py" <<'EOF'
import socket, sys, time

IPPROTO_MPTCP = 262
role, proto, idle, secs = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
p = socket.IPPROTO_TCP if proto == "tcp" else IPPROTO_MPTCP
if role == "recv":
    cap = int(sys.argv[5])
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM, p)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("10.77.0.2", 5601))
    ls.listen(1)
    print("ready", flush=True)
    c, _ = ls.accept()
    buf = bytearray(1 << 17)
    n, start, last, at_cap, steps, early = 0, None, 0.0, None, [], None
    rcvbuf = lambda: c.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    while True:
        k = c.recv_into(buf)
        if k == 0:
            break
        n += k
        now = time.monotonic()
        if start is None and n > 100:
            start = now
        if start is not None and early is None and now - start >= 2:
            early = (n - 100) * 8 / (now - start) / 1e9
        if start is not None and now - last >= 0.02:
            last = now
            rb = rcvbuf()
            if not steps or steps[-1][1] != rb:
                steps.append((round(now - start, 2), rb))
            if at_cap is None and rb >= cap:
                at_cap = now - start
    secs = time.monotonic() - start
    at = "never" if at_cap is None else f"{at_cap:.2f}"
    shown = ", ".join(f"{t}: {b}" for t, b in steps[:6])
    print(f"{early or 0:.2f} {(n - 100) * 8 / secs / 1e9:.2f} {at} {shown}", flush=True)
else:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, p)
    s.connect(("10.77.0.2", 5601))
    s.sendall(b"x" * 100)
    time.sleep(idle)
    chunk = b"y" * (1 << 16)
    end = time.monotonic() + secs
    while time.monotonic() < end:
        s.sendall(chunk)
    s.close()
EOF

echo "Linux $(uname -r); two veth pairs, offloads off; MPTCP with a second subflow joined; receive buffer cap $cap bytes"
printf '%-6s %-9s %-18s %-8s %-14s %s\n' case "idle (s)" "Gbit/s first 2 s" all "s to the cap" "receive buffer steps (s into the bulk: bytes)"
worst_mptcp_idle="" fresh_ok=1 max_idle=0
for idle in $IDLES; do
  (( idle > max_idle )) && max_idle=$idle
  for proto in tcp mptcp; do
    out="$WORK/recv.out"
    ip netns exec "$RCV" python3 "$WORK/peer.py" recv "$proto" 0 0 "$cap" >"$out" &
    rpid=$!
    until grep -q ready "$out"; do sleep 0.05; done
    ip netns exec "$SND" python3 "$WORK/peer.py" send "$proto" "$idle" "$SECS"
    wait "$rpid"
    read -r early gbit at_cap steps < <(tail -1 "$out")
    printf '%-6s %-9s %-18s %-8s %-14s %s\n' "$proto" "$idle" "$early" "$gbit" "$at_cap" "$steps"
    late=$(python3 -c 'import sys; a=sys.argv[1]; print(1 if a == "never" or float(a) >= float(sys.argv[2]) else 0)' "$at_cap" 1)
    if [[ $proto == mptcp && $idle == 0 && $late == 1 ]]; then fresh_ok=0; fi
    if [[ $proto == mptcp && $idle == "$max_idle" ]]; then worst_mptcp_idle=$at_cap; fi
  done
done

stalled=$(python3 -c 'import sys; a, i = sys.argv[1], float(sys.argv[2]); print(1 if i > 0 and (a == "never" or float(a) >= i / 2) else 0)' "${worst_mptcp_idle:-never}" "$max_idle")
if [[ $stalled == 1 && $fresh_ok == 1 ]]; then
  echo "REPRODUCED: after ${max_idle} s idle the MPTCP receive buffer reached its cap only after ${worst_mptcp_idle} s of bulk; without idle within a second"
  exit 0
fi
echo "NOT REPRODUCED (MPTCP after ${max_idle} s idle: cap after ${worst_mptcp_idle:-?} s; MPTCP without idle within 1 s: $fresh_ok)"
exit 1
