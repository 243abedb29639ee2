#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a bounded time, prints a Markdown table (target,
# executions, executions per second, corpus size, crashes with their files) and appends it, with
# this command, to docs/BENCHMARKS.md. Each target starts from its committed seeds
# (fuzz/seeds/TARGET) and the corpus earlier runs left (fuzz/corpus/TARGET, not committed).
# A crash, timeout (an input that takes over 10 s) or out-of-memory stops that target and is
# kept in fuzz/artifacts/TARGET/; reproduce with `bash bench/fuzz.sh --repro FILE`. Exits 1
# when any target crashed. See docs/FUZZING.md.
#
#   bash bench/fuzz.sh [--secs N] [TARGET...]     (default 60 s each, every target)
#   bash bench/fuzz.sh --repro fuzz/artifacts/TARGET/crash-…
#
# cargo-fuzz needs nightly compiler flags (-Z sanitizer=address, sancov). This machine has only
# the stable toolchain, so the build runs with RUSTC_BOOTSTRAP=1, which lets stable rustc take
# them; nothing else is installed for it.
set -euo pipefail
cd "$(dirname "$0")/.."
cmdline="$*"
secs=60
targets=()
repro=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --secs) secs=$2; shift 2 ;;
    --repro) repro=$2; shift 2 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) targets+=("$1"); shift ;;
  esac
done
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "bench/fuzz.sh: cargo-fuzz is not installed; fix: cargo install cargo-fuzz --locked" >&2
  exit 2
fi
export RUSTC_BOOTSTRAP=1
triple=$(rustc -vV | awk '/^host:/ { print $2 }')
bin=fuzz/target/$triple/release
# -O: optimized; -a: with debug assertions (integer overflow panics, as in a debug build).
(cd fuzz && cargo fuzz build -O -a >/dev/null)
if [[ -n "$repro" ]]; then
  target=$(basename "$(dirname "$repro")")
  exec "$bin/$target" "$repro"
fi
if [[ ${#targets[@]} -eq 0 ]]; then
  mapfile -t targets < <(cd fuzz && cargo fuzz list)
fi

table="| target | executions | per second | corpus (files) | crashes |"$'\n'"|---|---|---|---|---|"
crashed=0
for t in "${targets[@]}"; do
  corpus=fuzz/corpus/$t
  artifacts=fuzz/artifacts/$t
  mkdir -p "$corpus" "$artifacts" "fuzz/seeds/$t"
  before=$(find "$artifacts" -type f | sort)
  echo "fuzzing $t for $secs s…" >&2
  log=$(mktemp)
  set +e
  "$bin/$t" "$corpus" "fuzz/seeds/$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$artifacts/" >"$log" 2>&1
  rc=$?
  set -e
  execs=$(awk '/^stat::number_of_executed_units:/ { print $2 }' "$log" | tail -n 1)
  rate=$(awk '/^stat::average_exec_per_sec:/ { print $2 }' "$log" | tail -n 1)
  files=$(find "$corpus" -type f | wc -l)
  new=$(comm -13 <(echo "$before") <(find "$artifacts" -type f | sort) | sed '/^$/d')
  if [[ $rc -ne 0 || -n "$new" ]]; then
    crashed=1
    what=$(echo "$new" | xargs -r -n1 basename | paste -sd, -)
    summary=$(grep -m1 -E "panicked at|ERROR: libFuzzer|SUMMARY" "$log" | cut -c1-160 || true)
    echo "$t: exit $rc; $summary (log kept at $log)" >&2
    table+=$'\n'"| $t | ${execs:-?} | ${rate:-?} | $files | **${what:-exit $rc}**: ${summary//|/\\|} |"
  else
    rm -f "$log"
    table+=$'\n'"| $t | ${execs:-?} | ${rate:-?} | $files | 0 |"
  fi
done

echo "$table"
{
  echo
  echo "## Fuzzing, $(date -u +%F)"
  echo
  echo "Command: \`bash bench/fuzz.sh $cmdline\` (cargo-fuzz $(cargo fuzz --version | awk '{print $2}'), $(rustc --version | awk '{print $1, $2}') with RUSTC_BOOTSTRAP=1, ASan, debug assertions; $(nproc) cores shared; $secs s per target)."
  echo
  echo "$table"
} >> docs/BENCHMARKS.md
exit $crashed
