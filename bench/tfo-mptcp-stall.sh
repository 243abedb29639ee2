#!/usr/bin/env bash
# TCP Fast Open over MPTCP: the server's reply is held back (Linux 6.2 to 6.18; seen on 6.18.44).
#
# A TFO listener accepts a connection as soon as the SYN with data arrives. On an MPTCP socket,
# a reply written before the handshake's third ACK arrives is queued at the MPTCP level but not
# sent: mptcp_subflow_get_send() finds no usable subflow because __mptcp_subflow_active() ->
# __tcp_can_send() admits only TCPF_ESTABLISHED | TCPF_CLOSE_WAIT, and the subflow is still in
# TCP_SYN_RECV (tcp_sendmsg_locked() lets a tcp_passive_fastopen() socket send in that state;
# MPTCP does not). __mptcp_push_pending() sent nothing, so no MPTCP retransmit timer is armed.
# When the third ACK arrives it carries MP_CAPABLE but no DSS, so mptcp_incoming_options() ->
# check_fully_established() marks the subflow fully established and returns before
# ack_update_msk(), the only place on that path that calls __mptcp_check_push(). The reply
# leaves only when the client sends again (data, a DATA_ACK or a DATA_FIN), when the server
# writes again, or when it sets TCP_NODELAY (mptcp_check_and_set_pending()). A client that
# waits for the reply waits forever. Plain TCP with TFO, on the same links, replies at once.
#
#   sudo bash bench/tfo-mptcp-stall.sh
#
# It builds two network namespaces (${BRAID_LAB_TAG}mptfo-cli, ${BRAID_LAB_TAG}mptfo-srv) joined
# by one veth pair, slows the client's egress so that the third ACK arrives some milliseconds
# after the SYN (tc netem delay 10ms; where sch_netem is missing, an htb of 256 kbit/s, which
# holds each packet behind the one before), and then, for TCP, MPTCP, and MPTCP with the
# workaround (wait until the first subflow leaves SYN_RECV, then set TCP_NODELAY), makes one
# cookie-fetching connection and three TFO request/replies of 100 bytes, each with a 3 s limit.
# Needs root, iproute2 (ip, tc) and python3; touches nothing outside its namespaces and
# removes them on exit. Prints one line per case; exit status 0 when the stall was reproduced
# (MPTCP replies late, TCP and the workaround on time), 1 when not.
set -euo pipefail

CLI="${BRAID_LAB_TAG:-}mptfo-cli"
SRV="${BRAID_LAB_TAG:-}mptfo-srv"
PORT=9000
SRV_ADDR=10.77.0.2
WORK=$(mktemp -d)

cleanup() {
  [[ -f $WORK/server.pid ]] && kill "$(cat "$WORK/server.pid")" 2>/dev/null || true
  ip netns del "$CLI" 2>/dev/null || true
  ip netns del "$SRV" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

ip netns add "$CLI"
ip netns add "$SRV"
ip link add mptfo-c netns "$CLI" type veth peer mptfo-s netns "$SRV"
ip -n "$CLI" addr add 10.77.0.1/24 dev mptfo-c
ip -n "$SRV" addr add "$SRV_ADDR/24" dev mptfo-s
for ns in "$CLI" "$SRV"; do
  ip -n "$ns" link set lo up
  ip netns exec "$ns" sysctl -qw net.ipv4.tcp_fastopen=3 net.mptcp.enabled=1
done
ip -n "$CLI" link set mptfo-c up
ip -n "$SRV" link set mptfo-s up
if ip netns exec "$CLI" tc qdisc add dev mptfo-c root netem delay 10ms 2>/dev/null; then
  slow="netem delay 10ms on the client's egress"
else
  ip netns exec "$CLI" tc qdisc add dev mptfo-c root handle 1: htb default 1
  ip netns exec "$CLI" tc class add dev mptfo-c parent 1: classid 1:1 htb rate 256kbit ceil 256kbit burst 1b cburst 1b 2>/dev/null
  slow="htb 256 kbit/s on the client's egress (no sch_netem)"
fi

cat > "$WORK/tfo.py" <<'EOF'
import socket, sys, time

IPPROTO_MPTCP = 262
TCP_FASTOPEN = 23
MSG_FASTOPEN = 0x20000000
TCP_SYN_RECV = 3

def tcp_info(s):
    return s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)

def serve(port, proto, push):
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM, proto)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.setsockopt(socket.IPPROTO_TCP, TCP_FASTOPEN, 16)
    ls.bind(("0.0.0.0", port))
    ls.listen(16)
    print("ready", flush=True)
    while True:
        c, _ = ls.accept()
        req = c.recv(1000)
        c.send(b"R" * len(req))  # the reply, written at once
        if push:
            # The workaround: once the first subflow is established, TCP_NODELAY pushes the queue.
            while tcp_info(c)[0] == TCP_SYN_RECV:
                time.sleep(0.0005)
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c.settimeout(10)
        try:
            while c.recv(1000):
                pass
        except OSError:
            pass
        c.close()

def ask(addr, port, proto):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, proto)
    start = time.monotonic()
    s.sendto(b"Q" * 100, MSG_FASTOPEN, (addr, port))
    s.settimeout(3)
    try:
        got = s.recv(1000)
        ms = "%.0f" % ((time.monotonic() - start) * 1000) if got else "EOF"
    except socket.timeout:
        ms = ">3000"
    syn_data = bool(tcp_info(s)[5] & 32)  # TCPI_OPT_SYN_DATA
    s.close()
    return ms, syn_data

if __name__ == "__main__":
    proto = IPPROTO_MPTCP if sys.argv[2] == "mptcp" else socket.IPPROTO_TCP
    if sys.argv[1] == "serve":
        serve(int(sys.argv[3]), proto, sys.argv[4] == "push")
    else:
        ask(sys.argv[3], int(sys.argv[4]), proto)  # fetches the cookie
        times, data = [], []
        for _ in range(3):
            ms, d = ask(sys.argv[3], int(sys.argv[4]), proto)
            times.append(ms)
            data.append("yes" if d else "no")
        print(" ".join(times) + "|" + " ".join(data))
EOF

run_case() { # PROTO PUSH LABEL
  local log="$WORK/server-$1-$2.out"
  ip netns exec "$SRV" python3 "$WORK/tfo.py" serve "$1" "$PORT" "$2" > "$log" 2>&1 &
  echo $! > "$WORK/server.pid"
  for _ in $(seq 100); do grep -q ready "$log" 2>/dev/null && break; sleep 0.05; done
  local out
  out=$(ip netns exec "$CLI" python3 "$WORK/tfo.py" ask "$1" "$SRV_ADDR" "$PORT")
  kill "$(cat "$WORK/server.pid")" 2>/dev/null || true
  wait "$(cat "$WORK/server.pid")" 2>/dev/null || true
  rm -f "$WORK/server.pid"
  printf '%-34s %-22s %s\n' "$3" "${out%%|*}" "${out##*|}"
  echo "${out%%|*}" > "$WORK/$1-$2"
}

echo "Linux $(uname -r); $slow"
printf '%-34s %-22s %s\n' "case" "reply after (ms)" "SYN carried data"
run_case tcp plain "TCP"
run_case mptcp plain "MPTCP"
run_case mptcp push "MPTCP, server pushes (workaround)"

late() { grep -q '>3000' "$WORK/$1"; }
if late mptcp-plain && ! late tcp-plain && ! late mptcp-push; then
  echo "REPRODUCED: over MPTCP the TFO reply was held back; over TCP, and with the push, it was not"
  exit 0
fi
echo "NOT REPRODUCED on this kernel"
exit 1
