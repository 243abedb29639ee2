#!/usr/bin/env bash
# UDP through braid beside the same uplink without braid: goodput and loss of a paced datagram
# run at 90 % of wifi's rate, a UDP session's longest gap when its uplink is blackholed, and DNS
# query time (median of 100) to dnsmasq behind the relay, and a QUIC download direct beside
# through braid. Prints Markdown and appends it, with
# this command, to docs/BENCHMARKS.md. Needs root.
#
#   bash bench/udp.sh [--secs S] [--load 0.9] [--queries N]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup
cargo build --release -q -p braid --features lab
out=$(./target/release/braid lab bench udp "$@")
echo "$out"
{
  echo
  echo "## UDP, $(date -u +%F)"
  echo
  echo "Command: \`bash bench/udp.sh $*\` (release build; kernel $(uname -r); $(nproc) cores)."
  echo
  echo "$out"
} >> docs/BENCHMARKS.md
