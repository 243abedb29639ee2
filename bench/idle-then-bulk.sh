#!/usr/bin/env bash
# Does the kernel autotune the receive buffer of a connection that sat idle after its first
# bytes? A warm-pool connection does exactly that (a parked request, then seconds of nothing,
# then a bulk upload), and its uploads were slower than a fresh connection's in the unshaped lab
# (docs/BENCHMARKS.md, "Unshaped throughput with the warm pool") until braid grew such a
# connection's receive buffer to the kernel's cap on both ends (relay::IDLED_RCVBUF; "The warm
# pool's receive buffer"). This script shows the kernel alone: the receiver's SO_RCVBUF column
# says whether autotuning caught up after the idle time.
#
# Two namespaces joined by two veth pairs (offloads off, no shaping): a receiver that reads
# everything, a sender that connects, sends 100 bytes, waits --idle seconds, then sends as fast
# as it can for --secs. For TCP, MPTCP on one path, and MPTCP with a second subflow joined over
# the other pair (as a pooled connection's is, during its idle time), idle 0 and idle --idle:
# the goodput and the receiver's SO_RCVBUF at the end (what autotuning reached). Prints a Markdown table and appends
# it, with this command, to docs/BENCHMARKS.md. Needs root; touches nothing outside its two
# namespaces, which it always removes.
#
#   bash bench/idle-then-bulk.sh [--idle 5] [--secs 5] [--rounds 2]
set -euo pipefail
cd "$(dirname "$0")/.."

IDLE=5 SECS=5 ROUNDS=2
while [[ $# -gt 0 ]]; do
  case "$1" in
    --idle) IDLE="$2"; shift 2 ;;
    --secs) SECS="$2"; shift 2 ;;
    --rounds) ROUNDS="$2"; shift 2 ;;
    *) echo "unknown option $1 (use --idle N, --secs N, --rounds N)" >&2; exit 2 ;;
  esac
done
[[ $EUID -eq 0 ]] || { echo "needs root (network namespaces)" >&2; exit 1; }

P="bidle$$"
A="$P-a" B="$P-b"
cleanup() { ip netns del "$A" 2>/dev/null || true; ip netns del "$B" 2>/dev/null || true; }
trap cleanup EXIT
ip netns add "$A"
ip netns add "$B"
ip link add "$P-x" netns "$A" type veth peer name "$P-y" netns "$B"
ip link add "$P-x2" netns "$A" type veth peer name "$P-y2" netns "$B"
ip -n "$A" addr add 10.77.0.1/24 dev "$P-x"
ip -n "$B" addr add 10.77.0.2/24 dev "$P-y"
ip -n "$A" addr add 10.78.0.1/24 dev "$P-x2"
ip -n "$B" addr add 10.78.0.2/24 dev "$P-y2"
for ns in "$A" "$B"; do
  ip -n "$ns" link set lo up
  ip netns exec "$ns" sysctl -qw net.mptcp.enabled=1
  ip -n "$ns" mptcp limits set subflows 2 add_addr_accepted 0
done
for i in "$A:$P-x" "$B:$P-y" "$A:$P-x2" "$B:$P-y2"; do
  ip -n "${i%%:*}" link set "${i#*:}" up
  ip netns exec "${i%%:*}" ethtool -K "${i#*:}" tso off gso off gro off >/dev/null
done
# The second path: subflows from 10.78.0.1 reach the receiver's 10.77.0.2 over the second pair.
ip -n "$A" rule add from 10.78.0.1 table 100
ip -n "$A" route add 10.77.0.0/24 via 10.78.0.2 dev "$P-x2" table 100

PY=$(cat <<'EOF'
import socket, sys, time, json
IPPROTO_MPTCP = 262
role, proto, idle, secs = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
p = socket.IPPROTO_TCP if proto == "tcp" else IPPROTO_MPTCP
if role == "recv":
    l = socket.socket(socket.AF_INET, socket.SOCK_STREAM, p)
    l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    l.bind(("10.77.0.2", 5601)); l.listen(1)
    print("ready", flush=True)
    c, _ = l.accept()
    buf = bytearray(1 << 17); n = 0; start = None
    while True:
        k = c.recv_into(buf)
        if k == 0: break
        n += k
        if n > 100 and start is None: start = time.monotonic()
    dt = time.monotonic() - (start or time.monotonic())
    print(json.dumps({"bytes": n, "secs": dt,
                      "rcvbuf": c.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)}), flush=True)
else:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, p)
    s.connect(("10.77.0.2", 5601))
    s.sendall(b"x" * 100)
    time.sleep(idle)
    chunk = b"y" * (1 << 16); end = time.monotonic() + secs
    while time.monotonic() < end: s.sendall(chunk)
    s.close()
EOF
)

rows=()
for round in $(seq 1 "$ROUNDS"); do
  for proto in tcp mptcp mptcp-2; do
    # The sender's path manager joins a subflow from 10.78.0.1 only for the two-path case.
    ip -n "$A" mptcp endpoint flush
    [[ $proto == mptcp-2 ]] && ip -n "$A" mptcp endpoint add 10.78.0.1 dev "$P-x2" subflow
    for idle in 0 "$IDLE"; do
      out=$(mktemp)
      ip netns exec "$B" python3 -c "$PY" recv "$proto" 0 0 >"$out" &
      rpid=$!
      until grep -q ready "$out"; do sleep 0.05; done
      ip netns exec "$A" python3 -c "$PY" send "$proto" "$idle" "$SECS"
      wait "$rpid"
      res=$(tail -1 "$out"); rm -f "$out"
      gbit=$(python3 -c "import json,sys; r=json.loads(sys.argv[1]); print(f\"{r['bytes']*8/r['secs']/1e9:.2f}\")" "$res")
      rcvbuf=$(python3 -c "import json,sys; print(json.loads(sys.argv[1])['rcvbuf'])" "$res")
      echo "round $round: $proto, idle $idle s: $gbit Gbit/s, receiver SO_RCVBUF $rcvbuf" >&2
      rows+=("$proto|$idle|$round|$gbit|$rcvbuf")
    done
  done
done

md="### Bulk after idle: one connection, 100 bytes, then idle, then ${SECS} s of bulk (two veth pairs, offloads off; ${ROUNDS} round(s))

| transport (mptcp-2: a second subflow joins) | idle before the bulk | Gbit/s per round | receiver's SO_RCVBUF at the end, per round |
|---|---|---|---|
"
for proto in tcp mptcp mptcp-2; do
  for idle in 0 "$IDLE"; do
    g=() r=()
    for row in "${rows[@]}"; do
      IFS='|' read -r p i _ gb rb <<<"$row"
      [[ $p == "$proto" && $i == "$idle" ]] || continue
      g+=("$gb"); r+=("$rb")
    done
    md+="| $proto | $idle s | $(IFS=/; echo "${g[*]}" | sed 's#/# / #g') | $(IFS=/; echo "${r[*]}" | sed 's#/# / #g') |
"
  done
done
echo "$md"
{
  echo
  echo "## Bulk after idle, $(date -u +%Y-%m-%d)"
  echo
  echo "Command: \`bash bench/idle-then-bulk.sh --idle $IDLE --secs $SECS --rounds $ROUNDS\` (kernel $(uname -r); $(nproc) cores)."
  echo
  echo "$md"
} >>docs/BENCHMARKS.md
