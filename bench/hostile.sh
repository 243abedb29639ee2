#!/usr/bin/env bash
# Bonding over an uplink whose middlebox strips MPTCP options (the lab's TCPOPTSTRIP on 5g):
# bonded goodput with braid's tunnel (`tunnel = "auto"`) and without it (`"never"`) against the
# single-uplink TCP sum of the same run, the time from the first stripped join to 5g carrying
# subflows through the tunnel, 5g alone through the tunnel against 5g direct, and the relay's
# CPU per Gbit through the tunnel beside the direct path on unshaped uplinks (every offload off
# first). Prints a Markdown table and appends it, with this command, to docs/BENCHMARKS.md.
# Needs root.
#
#   bash bench/hostile.sh [--secs N]
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib/run.sh
bench_prepare
bench_record "Hostile path" hostile.sh hostile "$@"
