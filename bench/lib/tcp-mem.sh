# shellcheck shell=bash
# The kernel's TCP memory counter, for benchmark scripts (source this file).
#
# The counter ("mem" on the TCP: line of /proc/net/sockstat, in pages) is host-wide. On Linux
# 6.18 heavy MPTCP traffic with segmentation offloads made it run away (millions of pages in
# seconds); past net.ipv4.tcp_mem's maximum every new TCP connection on the host fails, so every
# later measurement on that boot is poisoned. Benchmarks record it before and after each phase,
# and refuse to start on a kernel already under pressure.

# Pages charged to TCP now.
tcp_mem_pages() {
  awk '/^TCP:/ { for (i = 2; i < NF; i++) if ($i == "mem") print $(i + 1) }' /proc/net/sockstat
}

# net.ipv4.tcp_mem field N (1 min, 2 pressure, 3 max), or "?" where it is not visible.
tcp_mem_limit() {
  awk -v n="$1" '{ print $n }' /proc/sys/net/ipv4/tcp_mem 2>/dev/null || echo "?"
}

# MPTCP inet_sock_destruct warnings in the kernel log since boot ("?" when it is not readable).
tcp_mem_kernel_warnings() {
  if dmesg >/dev/null 2>&1; then
    dmesg | grep -c 'WARNING.*inet_sock_destruct' || true
  else
    echo "?"
  fi
}

# tcp_mem_guard: exits when the counter is already at tcp_mem's pressure threshold, because the
# figures of this boot would be wrong (set BENCH_IGNORE_TCP_MEM=1 to run anyway).
tcp_mem_guard() {
  local now pressure
  now=$(tcp_mem_pages)
  pressure=$(tcp_mem_limit 2)
  if [[ "$pressure" != "?" && "$now" -ge "$pressure" && "${BENCH_IGNORE_TCP_MEM:-0}" != 1 ]]; then
    echo "bench: the kernel's TCP memory counter is at $now pages, past tcp_mem's pressure threshold ($pressure):" >&2
    echo "bench: measurements on this boot would be wrong. Run 'braid doctor --config FILE' (kernel.tcp_mem);" >&2
    echo "bench: fix: reboot (or boot a kernel with the fix). BENCH_IGNORE_TCP_MEM=1 runs anyway." >&2
    exit 1
  fi
}

# tcp_mem_mark PHASE: remembers the counter at the start of PHASE.
tcp_mem_mark() {
  TCP_MEM_PHASE=$1
  TCP_MEM_BEFORE=$(tcp_mem_pages)
  TCP_MEM_WARN_BEFORE=$(tcp_mem_kernel_warnings)
}

# tcp_mem_report: one Markdown line with the counter before and after the marked phase, plus a
# warning when it grew by more than 50,000 pages (200 MB) or the kernel logged the MPTCP warning.
tcp_mem_report() {
  local after warn_after delta
  after=$(tcp_mem_pages)
  warn_after=$(tcp_mem_kernel_warnings)
  delta=$((after - TCP_MEM_BEFORE))
  echo "TCP memory (sockstat mem, pages) during $TCP_MEM_PHASE: $TCP_MEM_BEFORE before, $after after ($delta); tcp_mem $(tcp_mem_limit 1) $(tcp_mem_limit 2) $(tcp_mem_limit 3); MPTCP kernel warnings $TCP_MEM_WARN_BEFORE → $warn_after."
  if [[ $delta -gt 50000 || "$warn_after" != "$TCP_MEM_WARN_BEFORE" ]]; then
    echo
    echo "**WARNING**: the kernel's TCP memory counter grew by $delta pages or the kernel logged its MPTCP accounting warning during $TCP_MEM_PHASE: the figures above, and every later run on this boot, may be wrong (see 'braid doctor', check kernel.tcp_mem)."
  fi
}
