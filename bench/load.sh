#!/usr/bin/env bash
# Load: idle relayed connections held by one relay (through the gateway's capture), descriptors
# and RSS per connection on each side, a valid client's time to first byte while thousands of
# unauthenticated connections are held open on the relay, the gateway's RSS idle and with
# connections, and relayed connections opened per second (beside shadowsocks-rust with
# --ssrust DIR). Prints a Markdown table and appends it, with this command, to
# docs/BENCHMARKS.md. Needs root.
#
#   bash bench/load.sh [--connections 10000] [--unauthenticated 5000] [--gateway-connections 1000]
#                      [--rate-secs 10] [--rate-workers 16] [--nofile 65536] [--ssrust DIR]
#
# The daemons size their caps from the open-file limit they start with. The limit is raised for
# this script's processes only (ulimit here, and `braid lab bench load --nofile` raises its own
# soft and hard limit, which every process of the lab inherits); the host's defaults stay.
# The lab's uplinks are shaped (htb, delay), and the traffic is a byte each way per connection,
# so no unshaped bulk traffic runs with segmentation offloads on.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib/tcp-mem.sh
source bench/lib/tcp-mem.sh
bash scripts/setup
cargo build --release -q -p braid
tcp_mem_guard
nofile=65536
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  [[ ${args[$i]} == --nofile ]] && nofile=${args[$((i + 1))]}
done
# Where the hard limit cannot be raised (a container without CAP_SYS_RESOURCE), the soft one
# goes as far as it allows; the table says which limit was in force.
ulimit -Hn "$nofile" 2>/dev/null || true
ulimit -n "$nofile" 2>/dev/null || ulimit -n "$(ulimit -Hn)"
tcp_mem_mark "the load benchmark"
out=$(./target/release/braid lab bench load "$@")
echo "$out"
mem=$(tcp_mem_report)
echo "$mem"
{
  echo
  echo "## Load, $(date -u +%F)"
  echo
  echo "Command: \`bash bench/load.sh $*\` (release build; kernel $(uname -r); $(nproc) cores)."
  echo
  echo "$out"
  echo
  echo "$mem"
} >> docs/BENCHMARKS.md
