#!/usr/bin/env bash
# Failover, recovery and the longest stall for each fault scenario (link down, silent blackhole,
# address change, both uplinks blackholed at once), braid beside kernel-only MPTCP set up once
# by a script, from goodput sampled every 100 ms at the receiver. Prints a Markdown table and
# appends it, with this command, to docs/BENCHMARKS.md. Needs root.
#
#   bash bench/failover.sh [--before S] [--during S] [--after S]
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib/run.sh
bench_prepare
bench_record "Failover" failover.sh failover "$@"
