#!/usr/bin/env bash
# Bonded goodput over lossy uplinks (default 0.5 % loss each way on wifi, 1 % on 5g), per
# congestion control of braid's relay sockets (`congestion`), against the lossless single-uplink
# TCP sum measured in the same run; also braid on the clean links per algorithm, and the MPTCP
# sysctls that bear on loss (net.mptcp.stale_loss_cnt, each available net.mptcp.scheduler) under
# BBR. The host's default congestion control is never changed: each algorithm is chosen with
# braid's `congestion` key. Prints a Markdown table and appends it, with this command, to
# docs/BENCHMARKS.md. Needs root.
#
#   bash bench/lossy.sh [--secs N] [--wifi-loss-permille 5] [--g5-loss-permille 10]
#                       [--congestion cubic,bbr] [--stale-loss-cnt 2,8]
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib/run.sh
bench_prepare
bench_record "Lossy uplinks" lossy.sh lossy "$@"
