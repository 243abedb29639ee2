#!/usr/bin/env bash
# ============================================================================================
#  THROWAWAY MACHINE ONLY (with --offloads on).
#
#  Reproduces the kernel fault seen in braid's lab on Linux 6.18.44: heavy MPTCP traffic with
#  segmentation offloads (GRO/TSO/GSO) on makes the kernel log
#      WARNING: ... at net/ipv4/af_inet.c:... inet_sock_destruct   (from __mptcp_close_ssk)
#  after which the host-wide TCP memory counter ("mem" in /proc/net/sockstat) runs away past
#  net.ipv4.tcp_mem: "TCP: out of memory -- consider tuning tcp_mem", and EVERY new TCP
#  connection on the WHOLE MACHINE fails (SSH included) until a reboot or until tcp_mem is
#  raised by hand. net.ipv4.tcp_mem is global: a network namespace does not contain it.
#
#  Run it only on a machine you can reboot from a console, that nobody else uses, and that you
#  do not reach over TCP. Never on a CI runner or a shared development machine.
# ============================================================================================
#
# Two network namespaces joined by two veth pairs carry one MPTCP connection per round with two
# subflows, unshaped, from a small python3 sender to a receiver, which ends the connection the
# way --end says. Before and after every round it prints the TCP memory counter and the count of
# the kernel's MPTCP warnings, and a watchdog stops the traffic as soon as the counter grows by
# --stop-growth pages (the runaway, caught early) so the machine stays usable as long as
# possible.
#
#   bash bench/tcp-mem-runaway.sh --i-am-on-a-throwaway-machine [options]   # offloads on
#   bash bench/tcp-mem-runaway.sh --offloads off [options]                  # the control
#
# Options:
#   --offloads on|off   GRO/TSO/GSO on the veths (default on; "off" needs no confirmation: in
#                       the lab the counter then moved by a few hundred pages per run)
#   --end E             how the receiver ends each connection:
#                         close-unread  close() while the sender still sends: unread data, so
#                                       MPTCP does a fastclose (MP_FASTCLOSE + resets) (default)
#                         reset         SO_LINGER 0, then close(): the same, forced
#                         drain         shutdown(SHUT_WR), read to EOF, then close(): a clean
#                                       DATA_FIN close, nothing left unread (the control)
#   --flap              also delete and re-add the second subflow's endpoint mid-transfer (what
#                       braid does when an uplink goes Down and Up again)
#   --side gw|vps       which namespace receives the bulk data: gw (a download, as a gateway
#                       receives) or vps (an upload, as the relay receives) (default gw)
#   --secs S            seconds of traffic per round (default 8)
#   --rounds N          rounds (default 5)
#   --stop-growth P     stop when the counter grew by P pages (default 200000, about 800 MB)
#
# Needs root, iproute2, ethtool, python3 (with socket.IPPROTO_MPTCP) and a kernel with MPTCP.
# Namespaces: ${BRAID_LAB_TAG}rwy-gw and ${BRAID_LAB_TAG}rwy-vps, removed on exit.
set -euo pipefail

offloads=on end=close-unread flap=0 side=gw secs=8 rounds=5 stop_growth=200000 confirmed=0
while [[ $# -gt 0 ]]; do
  case $1 in
    --i-am-on-a-throwaway-machine) confirmed=1 ;;
    --offloads) offloads=$2; shift ;;
    --end) end=$2; shift ;;
    --flap) flap=1 ;;
    --side) side=$2; shift ;;
    --secs) secs=$2; shift ;;
    --rounds) rounds=$2; shift ;;
    --stop-growth) stop_growth=$2; shift ;;
    -h|--help) sed -n '2,52p' "$0"; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
case $offloads in on|off) ;; *) echo "--offloads on|off" >&2; exit 2 ;; esac
case $end in close-unread|reset|drain) ;; *) echo "--end close-unread|reset|drain" >&2; exit 2 ;; esac
case $side in gw|vps) ;; *) echo "--side gw|vps" >&2; exit 2 ;; esac
if [[ $offloads == on && $confirmed != 1 ]]; then
  echo "refusing: --offloads on can stop every TCP connection on this machine until a reboot." >&2
  echo "Run it only on a throwaway machine, with --i-am-on-a-throwaway-machine." >&2
  exit 2
fi
[[ $(id -u) == 0 ]] || { echo "needs root (network namespaces)" >&2; exit 2; }

cd "$(dirname "$0")/.."
source bench/lib/tcp-mem.sh

tag=${BRAID_LAB_TAG:-}
gw=${tag}rwy-gw vps=${tag}rwy-vps
work=$(mktemp -d /tmp/braid-tcp-mem-runaway.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  ip netns del "$gw" 2>/dev/null || true
  ip netns del "$vps" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# --- the traffic tool: one MPTCP connection, the receiver ends it as --end says --------------
cat >"$work/flow.py" <<'PY'
import select, socket, struct, sys, time
IPPROTO_MPTCP = getattr(socket, "IPPROTO_MPTCP", 262)
role, where, secs, end = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
host, port = where.rsplit(":", 1)
def mptcp():
    return socket.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_MPTCP)
if role.startswith("listen-"):
    l = mptcp(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    l.bind((host, int(port))); l.listen(1)
    print("listening", flush=True)
    s, _ = l.accept()
    role = role[len("listen-"):]
else:
    s = mptcp(); s.connect((host, int(port)))
buf = bytes(1 << 20)
if role == "send":
    # Send until the receiver goes away; answer its half-close with ours.
    s.setblocking(False)
    try:
        while True:
            r, w, _ = select.select([s], [s], [], 1.0)
            if r and s.recv(65536) == b"":
                s.shutdown(socket.SHUT_WR); break
            if w:
                try: s.send(buf)
                except BlockingIOError: pass
    except OSError:
        pass
    s.close()
else:
    got, t0 = 0, time.monotonic()
    while time.monotonic() - t0 < secs:
        n = len(s.recv(1 << 20))
        if n == 0: break
        got += n
    if end == "reset":
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    elif end == "drain":
        s.shutdown(socket.SHUT_WR)
        while True:
            d = s.recv(1 << 20)
            if not d: break
            got += len(d)
    s.close()  # close-unread: the sender is still sending, so data is left unread
    print(f"received {got / 1e9:.2f} GB in {time.monotonic() - t0:.1f} s", flush=True)
PY

# --- two namespaces, two paths, MPTCP with one extra subflow ---------------------------------
ip netns del "$gw" 2>/dev/null || true
ip netns del "$vps" 2>/dev/null || true
ip netns add "$gw"
ip netns add "$vps"
in_gw() { ip netns exec "$gw" "$@"; }
in_vps() { ip netns exec "$vps" "$@"; }
for i in 1 2; do
  ip link add "rwy-g$i" netns "$gw" type veth peer name "rwy-v$i" netns "$vps"
  in_gw ip addr add "10.71.$i.1/24" dev "rwy-g$i"
  in_vps ip addr add "10.71.$i.2/24" dev "rwy-v$i"
  in_gw ip link set "rwy-g$i" up
  in_vps ip link set "rwy-v$i" up
  state=$offloads
  in_gw ethtool -K "rwy-g$i" gro "$state" tso "$state" gso "$state" >/dev/null 2>&1 || true
  in_vps ethtool -K "rwy-v$i" gro "$state" tso "$state" gso "$state" >/dev/null 2>&1 || true
done
for ns in "$gw" "$vps"; do
  ip netns exec "$ns" ip link set lo up
  ip netns exec "$ns" sysctl -qw net.mptcp.enabled=1 net.ipv4.conf.all.rp_filter=2
  ip netns exec "$ns" ip mptcp limits set subflows 2 add_addr_accepted 2
done
in_vps ip addr add 10.71.0.1/32 dev lo
in_gw ip route add 10.71.0.1/32 via 10.71.1.2 dev rwy-g1
in_gw ip route add 10.71.0.1/32 via 10.71.2.2 dev rwy-g2 table 102
in_gw ip rule add from 10.71.2.1 table 102
endpoint() { in_gw ip mptcp endpoint "$1" 10.71.2.1 dev rwy-g2 subflow 2>/dev/null || true; }
# An MPTcpExt counter of the gw namespace (nstat name without the prefix).
mptcp_counter() {
  in_gw awk -v f="$1" '/^MPTcpExt:/ { if (!n) { for (i = 2; i <= NF; i++) c[i] = $i; n = 1 } else for (i = 2; i <= NF; i++) if (c[i] == f) print $i }' /proc/net/netstat
}
endpoint add

if [[ $side == gw ]]; then
  listener=(in_vps python3 "$work/flow.py" listen-send 10.71.0.1:5999 0 -)
  connector=(in_gw python3 "$work/flow.py" recv 10.71.0.1:5999 "$secs" "$end")
else
  listener=(in_vps python3 "$work/flow.py" listen-recv 10.71.0.1:5999 "$secs" "$end")
  connector=(in_gw python3 "$work/flow.py" send 10.71.0.1:5999 0 -)
fi

echo "kernel $(uname -r); offloads $offloads; receiver $side; end $end; flap $flap; ${secs} s x $rounds rounds"
echo "TCP memory at start: $(tcp_mem_pages) pages; tcp_mem $(tcp_mem_limit 1) $(tcp_mem_limit 2) $(tcp_mem_limit 3); MPTCP kernel warnings $(tcp_mem_kernel_warnings)"
start=$(tcp_mem_pages)
triggered=0
for r in $(seq 1 "$rounds"); do
  tcp_mem_mark "round $r"
  "${listener[@]}" >"$work/listener.out" 2>&1 &
  pids+=($!)
  lpid=$!
  until grep -q listening "$work/listener.out" 2>/dev/null; do
    kill -0 "$lpid" 2>/dev/null || { cat "$work/listener.out" >&2; exit 1; }
    sleep 0.05
  done
  "${connector[@]}" >"$work/connector.out" 2>&1 &
  pids+=($!)
  cpid=$!
  t0=$SECONDS flapped=0
  # The watchdog: stop the traffic the moment the counter runs away.
  while kill -0 "$cpid" 2>/dev/null || kill -0 "$lpid" 2>/dev/null; do
    now=$(tcp_mem_pages)
    if (( now - start > stop_growth )); then
      echo "round $r: the counter grew by $((now - start)) pages: RUNAWAY; stopping the traffic"
      kill -9 "$cpid" "$lpid" 2>/dev/null || true
      triggered=1
      break
    fi
    if [[ $flap == 1 && $flapped == 0 && $((SECONDS - t0)) -ge $((secs / 2)) ]]; then
      endpoint delete
      sleep 0.5
      endpoint add
      flapped=1
    fi
    sleep 0.2
  done
  wait "$cpid" 2>/dev/null || true
  wait "$lpid" 2>/dev/null || true
  cat "$work/listener.out" "$work/connector.out" | grep -v listening | sed "s/^/round $r: /" || true
  echo "round $r: $(tcp_mem_report | head -1) Subflows joined so far: $(mptcp_counter MPJoinSynAckRx); fastcloses sent: $(mptcp_counter MPFastcloseTx)."
  [[ $triggered == 1 ]] && break
done

after=$(tcp_mem_pages)
echo
echo "TCP memory at the end: $after pages ($((after - start)) since the start); MPTCP kernel warnings $(tcp_mem_kernel_warnings)"
if [[ $triggered == 1 || $((after - start)) -gt 50000 ]]; then
  echo "TRIGGERED: the counter ran away. Kernel log:"
  dmesg 2>/dev/null | grep -E 'inet_sock_destruct|__mptcp_close_ssk|TCP: out of memory' | tail -n 20 || true
  echo "To keep using this machine until a reboot: sysctl -w net.ipv4.tcp_mem=\"$(tcp_mem_limit 1) $(tcp_mem_limit 2) $((after * 4))\" (only postpones it)."
  exit 3
fi
echo "not triggered with these settings"
