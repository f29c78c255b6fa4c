#!/usr/bin/env bash
# Runs every fuzz target of fuzz/ for FUZZ_SECONDS (default 30) each, FUZZ_JOBS (default 2)
# at a time, starting from the committed corpora; fails on any crash, hang or leak of
# memory past the limit, and prints the executions each target ran.
#
#   fuzz/run.sh                 # every target, 30 s each
#   FUZZ_SECONDS=60 fuzz/run.sh codec ingest_json
#
# Toolchain: cargo-fuzz needs nightly compiler flags. With a nightly toolchain installed
# (`rustup toolchain list`), it is used; otherwise the stable compiler is run with
# RUSTC_BOOTSTRAP=1 (or when FUZZ_TOOLCHAIN=stable). cargo-fuzz itself is installed only
# when missing.
#
# Sanitizer: none (`-s none`). The project's crates forbid unsafe code, and without
# AddressSanitizer the targets run 4 to 6 times more executions in the same time; run a
# target with the default sanitizer for a deeper look (`cargo +nightly fuzz run codec`).
#
# New inputs found during the run go to a temporary directory, not to fuzz/corpus (to keep
# the committed corpus small, merge them in with `cargo fuzz cmin`). A crash leaves its
# input under fuzz/artifacts/<target>/; reproduce it with
#   cargo +nightly fuzz run <target> fuzz/artifacts/<target>/crash-…
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${FUZZ_SECONDS:-30}"
jobs="${FUZZ_JOBS:-2}"
targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
  targets=(codec projection_verify projection_sign config_files ingest_json)
fi
for t in "${targets[@]}"; do
  if [ ! -f "fuzz/fuzz_targets/$t.rs" ]; then
    echo "fuzz: no target named $t (see fuzz/fuzz_targets/)" >&2
    exit 2
  fi
done

# FUZZ_TOOLCHAIN=stable forces the stable path (to check it on a machine with nightly).
toolchain=()
nightly=$(rustup toolchain list 2>/dev/null | awk '/^nightly/ { print $1; exit }')
if [ "${FUZZ_TOOLCHAIN:-}" != stable ] && [ -n "$nightly" ]; then
  toolchain=("+${nightly}")
  flavour=nightly
  echo "fuzz: toolchain ${nightly}"
else
  # The default toolchain, with the nightly flags cargo-fuzz passes allowed on stable.
  export RUSTC_BOOTSTRAP=1
  flavour=stable
  echo "fuzz: default toolchain with RUSTC_BOOTSTRAP=1"
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi
cargo fuzz --version

started=$(date +%s)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
build_log="$work/build.log"
# Every target at once (their dependencies are shared; only the links differ), in a
# target directory of its own so that sanitizer builds of `cargo fuzz run` stay cached.
target_dir="fuzz/target/no-sanitizer-${flavour}"
if ! cargo "${toolchain[@]}" fuzz build -s none --target-dir "$target_dir" >"$build_log" 2>&1; then
  tail -n 60 "$build_log"
  echo "fuzz: build failed" >&2
  exit 1
fi
built=$(date +%s)
echo "fuzz: built in $((built - started)) s"

host=$(rustc -vV | sed -n 's/^host: //p')
bin_dir="${target_dir}/${host}/release"

run_one() {
  local t="$1"
  mkdir -p "$work/$t" "fuzz/artifacts/$t"
  # -timeout: one input taking this long is a hang; -rss_limit_mb: a decoder that
  # allocates what a length field claims shows here.
  if "$bin_dir/$t" "$work/$t" "fuzz/corpus/$t" \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="fuzz/artifacts/$t/" >"$work/$t.log" 2>&1; then
    echo ok >"$work/$t.status"
  else
    echo "failed ($?)" >"$work/$t.status"
  fi
}
export -f run_one
export work bin_dir seconds
printf '%s\n' "${targets[@]}" | xargs -P "$jobs" -I{} bash -c 'run_one {}'

failed=0
printf '\n%-18s %12s %10s %8s  %s\n' target executions exec/s corpus status
for t in "${targets[@]}"; do
  log="$work/$t.log"
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
  corpus=$(find "fuzz/corpus/$t" "$work/$t" -type f 2>/dev/null | wc -l)
  status=$(cat "$work/$t.status" 2>/dev/null || echo "did not run")
  printf '%-18s %12s %10s %8s  %s\n' "$t" "${runs:-?}" "${rate:-?}" "$corpus" "$status"
  if [ "$status" != ok ]; then
    failed=1
    echo "---- $t: last lines of the log ----"
    tail -n 40 "$log"
    ls -1 "fuzz/artifacts/$t/" 2>/dev/null | sed "s|^|fuzz/artifacts/$t/|"
  fi
done
echo "fuzz: ${seconds} s per target, ${jobs} at a time, $(($(date +%s) - started)) s in all"
exit "$failed"
