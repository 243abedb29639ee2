# Shared by the bench scripts that run one `braid lab bench` subcommand: a release build with
# the lab, the kernel's TCP memory counter guarded and recorded around the run, and the Markdown
# printed and appended to docs/BENCHMARKS.md under a dated title with the exact command.
# Source it from the repository's root.
# shellcheck source=bench/lib/tcp-mem.sh
source bench/lib/tcp-mem.sh

# The lab's tools and a release build; refuses to start on a machine whose TCP memory already ran
# away (a figure measured then would be the runaway's, not braid's).
bench_prepare() {
  bash scripts/setup
  cargo build --release -q -p braid --features lab
  tcp_mem_guard
}

# Sets BENCH_ARGS to "$@", plus `--ssrust /opt/ssrust/bin` when shadowsocks-rust's binaries are
# there (cargo install shadowsocks-rust --version 1.25.0 --root /opt/ssrust) and no folder was
# named, so the comparison runs whenever it can.
with_ssrust() {
  BENCH_ARGS=("$@")
  if [[ " ${BENCH_ARGS[*]-} " != *" --ssrust "* && -x /opt/ssrust/bin/ssserver && -x /opt/ssrust/bin/sslocal ]]; then
    BENCH_ARGS+=(--ssrust /opt/ssrust/bin)
  fi
}

# bench_record TITLE SCRIPT SUBCOMMAND ARGS...: runs `braid lab bench SUBCOMMAND ARGS...`,
# prints its tables and the TCP memory before and after, and appends both to
# docs/BENCHMARKS.md as "## TITLE, date" with the command `bash bench/SCRIPT ARGS...`.
bench_record() {
  local title=$1 script=$2 sub=$3
  shift 3
  tcp_mem_mark "$sub"
  local out
  out=$(./target/release/braid lab bench "$sub" "$@")
  out+=$'\n\n'$(tcp_mem_report)
  echo "$out"
  {
    echo
    echo "## $title, $(date -u +%F)"
    echo
    echo "Command: \`bash bench/$script $*\` (release build; kernel $(uname -r); $(nproc) cores)."
    echo
    echo "$out"
  } >> docs/BENCHMARKS.md
}
