#!/usr/bin/env bash
# Failover, recovery and the longest stall for each fault scenario (link down, silent blackhole,
# address change), braid beside kernel-only MPTCP set up once by a script, from goodput sampled
# every 100 ms at the receiver. Prints a Markdown table and appends it, with this command, to
# docs/BENCHMARKS.md. Needs root.
#
#   bash bench/failover.sh [--before S] [--during S] [--after S]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup
cargo build --release -q -p braid --features lab
source bench/lib/tcp-mem.sh
tcp_mem_guard
tcp_mem_mark "failover"
out=$(./target/release/braid lab bench failover "$@")
out+=$'\n\n'$(tcp_mem_report)
echo "$out"
{
  echo
  echo "## Failover, $(date -u +%F)"
  echo
  echo "Command: \`bash bench/failover.sh $*\` (release build; kernel $(uname -r); $(nproc) cores)."
  echo
  echo "$out"
} >> docs/BENCHMARKS.md
