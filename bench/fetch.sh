#!/usr/bin/env bash
# HTTP fetches of 100 B, 100 kB and 1 MB through the transparent capture, each on a fresh LAN
# connection, in the shaped lab (wifi 40 Mbit/s 10 ms, 5g 20 Mbit/s 40 ms): braid with its warm
# pool, braid without it, and the shadowsocks-rust stack when its binaries are there, in rotated
# order each round; medians of all fetches with each round's median. Then the warm pool's idle
# cost (connections held and opened, bytes per minute on each uplink, with and without the pool).
# Records the kernel's TCP memory counter before and after. Prints Markdown tables and appends
# them, with this command, to docs/BENCHMARKS.md. Needs root.
#
#   bash bench/fetch.sh [--count 15] [--rounds 2] [--gap-ms 500] [--idle-secs 60] [--ssrust DIR] [--backup-5g]
#
# shadowsocks-rust for the comparison: cargo install shadowsocks-rust --version 1.25.0 --root /opt/ssrust
# (found automatically in /opt/ssrust/bin).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib/run.sh
bench_prepare
with_ssrust "$@"
bench_record "Fetches" fetch.sh fetch "${BENCH_ARGS[@]}"
