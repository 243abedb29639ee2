#!/usr/bin/env bash
# UDP through braid beside the same uplink without braid: goodput and loss of a paced datagram
# run at 90 % of wifi's rate, a UDP session's longest gap when its uplink is blackholed (both ways
# and receiving only), and DNS
# query time (median of 100) to dnsmasq behind the relay, and a QUIC download direct beside
# through braid. Prints Markdown and appends it, with
# this command, to docs/BENCHMARKS.md. Needs root.
#
#   bash bench/udp.sh [--secs S] [--load 0.9] [--queries N]
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib/run.sh
bench_prepare
bench_record "UDP" udp.sh udp "$@"
