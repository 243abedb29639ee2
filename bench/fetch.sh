#!/usr/bin/env bash
# HTTP fetches of 100 B, 100 kB and 1 MB through the transparent capture, each on a fresh LAN
# connection, in the shaped lab (wifi 40 Mbit/s 10 ms, 5g 20 Mbit/s 40 ms): braid with its warm
# pool, braid without it, and the shadowsocks-rust stack when its binaries are there, in rotated
# order each round; medians of all fetches with each round's median. Then the warm pool's idle
# cost (connections held and opened, bytes per minute on each uplink, with and without the pool).
# Records the kernel's TCP memory counter before and after. Prints Markdown tables and appends
# them, with this command, to docs/BENCHMARKS.md. Needs root.
#
#   bash bench/fetch.sh [--count 15] [--rounds 2] [--gap-ms 500] [--idle-secs 60] [--ssrust DIR]
#
# shadowsocks-rust for the comparison: cargo install shadowsocks-rust --version 1.25.0 --root /opt/ssrust
# (found automatically in /opt/ssrust/bin).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup
cargo build --release -q -p braid --features lab
source bench/lib/tcp-mem.sh
tcp_mem_guard
tcp_mem_mark "fetch"
args=("$@")
if [[ " ${args[*]-} " != *" --ssrust "* && -x /opt/ssrust/bin/ssserver && -x /opt/ssrust/bin/sslocal ]]; then
  args+=(--ssrust /opt/ssrust/bin)
fi
out=$(./target/release/braid lab bench fetch "${args[@]}")
out+=$'\n\n'$(tcp_mem_report)
echo "$out"
{
  echo
  echo "## Fetches, $(date -u +%F)"
  echo
  echo "Command: \`bash bench/fetch.sh ${args[*]-}\` (release build; kernel $(uname -r); $(nproc) cores)."
  echo
  echo "$out"
} >> docs/BENCHMARKS.md
