#!/usr/bin/env bash
# Unshaped relay throughput, one stream each way, offloads off: braid beside the
# shadowsocks-rust stack (when its binaries are in /opt/ssrust/bin), raw kernel MPTCP, and two
# bare relays on the proxies' own three hops (read/write without header or crypto, and splice(2)
# without a copy to user space): what any proxy could reach on this path. Stacks in rotated
# order per round; CPU per Gbit, TCP memory, MPTCP re-sends and packets per MB per phase.
# Prints Markdown and appends it, with this command, to docs/BENCHMARKS.md. Needs root.
#
#   bash bench/throughput.sh [--secs 8] [--rounds 3] [--only braid --only bare-copy ...]
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib/run.sh
bench_prepare
with_ssrust "$@"
bench_record "Unshaped throughput against bare relays" throughput.sh throughput "${BENCH_ARGS[@]}"
