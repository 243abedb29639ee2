#!/usr/bin/env bash
# Bonded goodput, time to first byte and unshaped relay throughput, side by side in one run:
# braid vs the sum of single-uplink TCP, raw kernel MPTCP (no proxy) and, when its binaries are
# there, the shadowsocks-rust stack OpenMPTCPRouter users run. The unshaped part runs with
# segmentation offloads off on every veth, the stacks in rotated order over --rounds, and the
# kernel's TCP memory counter recorded around every phase (a phase where it runs away stops the
# run). --offloads-on adds one round with offloads on in a fresh lab: on Linux 6.18 that can
# break TCP for the whole machine until reboot, so only where a reboot is fine. Prints Markdown
# tables and appends them, with this command, to docs/BENCHMARKS.md. Needs root.
#
#   bash bench/aggregation.sh [--secs N] [--rounds 2] [--ssrust DIR] [--offloads-on]
#
# shadowsocks-rust for the comparison: cargo install shadowsocks-rust --version 1.25.0 --root /opt/ssrust
# (found automatically in /opt/ssrust/bin).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib/run.sh
bench_prepare
with_ssrust "$@"
bench_record "Aggregation" aggregation.sh aggregation "${BENCH_ARGS[@]}"
