#!/bin/bash
# berth's fuzzers (cargo-fuzz, libFuzzer; the targets are in fuzz/, docs/security.md says what
# each covers).
#
#   scripts/fuzz.sh ci [SECONDS]        every target for SECONDS (default 15) from a copy of its
#                                       committed corpus; fails on the first crash (CI)
#   scripts/fuzz.sh long [TARGET] [SECONDS] [RUNS]
#                                       one target (or all) until SECONDS (default 1800) or RUNS
#                                       executions (default 10000000), growing fuzz/corpus/;
#                                       appends the run to fuzz/runs.md
#   scripts/fuzz.sh planted [SECONDS]   builds virtqueue_blk with a known bug put back
#                                       (cfg berth_planted_bug) and checks the fuzzer finds it
#                                       within SECONDS (default 600)
#   scripts/fuzz.sh cmin [TARGET]       minimises the committed corpus (then put back the seed-* and
#                                       recorded-* inputs: git checkout, BERTH_FUZZ_WRITE_SEEDS=1)
#   scripts/fuzz.sh totals              remakes the totals table of fuzz/runs.md
#
# A crash is kept in fuzz/artifacts/<target>/; copy it to fuzz/regressions/<target>/ once fixed,
# and `cargo test -p berth-fuzz` replays it for good.
#
# cargo-fuzz is installed with `cargo install` when missing. It needs a nightly toolchain for
# the sanitizer flags: the installed nightly when there is one, else the stable toolchain with
# RUSTC_BOOTSTRAP=1 (the same flags, unlocked).
set -euo pipefail
cd "$(dirname "$0")/.."
say() { echo "fuzz.sh: $*" >&2; }
MODE=${1:-ci}
shift || true

scripts/host-deps.sh build >/dev/null
if ! cargo fuzz --version >/dev/null 2>&1; then
  say "installing cargo-fuzz"
  cargo install --locked cargo-fuzz >&2
fi
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  FUZZ=(cargo +nightly fuzz)
else
  export RUSTC_BOOTSTRAP=1
  FUZZ=(cargo fuzz)
fi
TARGETS=$(sed -n 's/^name = "\(.*\)"$/\1/p' fuzz/Cargo.toml | grep -v '^berth-fuzz$')
BIN=target/x86_64-unknown-linux-gnu/release

build() {
  say "${FUZZ[*]} build --features libfuzzer"
  "${FUZZ[@]}" build --features libfuzzer >&2
}

# The last libFuzzer status line's figures: executions, coverage, features, corpus entries.
figures() {
  local log=$1
  local last
  last=$(grep -E '^#[0-9]+' "$log" | tail -1)
  echo "$last" | sed -E 's/^#([0-9]+).* cov: ([0-9]+) ft: ([0-9]+) corp: ([0-9]+)\/([0-9a-zA-Z]+).*/\1 \2 \3 \4 \5/'
}

# Remakes the Totals section of fuzz/runs.md from its Runs: runs add up across sessions (each
# resumes from the corpus the last one grew), and the goal is 30 minutes or 10 million
# executions per target with no crash.
totals() {
  local tmp
  tmp=$(mktemp)
  awk -F'|' '
    /^## Runs/ { inruns = 1 }
    inruns && $4 ~ /[a-z]/ && $2 !~ /date/ {
      t = $4; gsub(/ /, "", t)
      if (!(t in n)) order[++k] = t
      n[t]++; runs[t] += $5; secs[t] += $6; if ($10 !~ /ok/) bad[t]++
    }
    END {
      print "| target | runs | executions | minutes | goal (30 min or 10M executions) | crashes |"
      print "|---|---|---|---|---|---|"
      for (i = 1; i <= k; i++) {
        t = order[i]
        met = (secs[t] >= 1800 || runs[t] >= 10000000) ? "met" : "not yet"
        printf "| %s | %d | %d | %.1f | %s | %d |\n", t, n[t], runs[t], secs[t] / 60, met, bad[t]
      }
    }' fuzz/runs.md >"$tmp.table"
  awk -v table="$tmp.table" '
    /^## Totals/ { print; print ""; while ((getline l < table) > 0) print l; print ""; skip = 1; next }
    /^## Runs/ { skip = 0 }
    !skip { print }' fuzz/runs.md >"$tmp"
  mv "$tmp" fuzz/runs.md
  rm -f "$tmp.table"
}

case "$MODE" in
totals)
  totals
  ;;
ci)
  SECS=${1:-15}
  build
  WORK=$(mktemp -d)
  trap 'rm -rf "$WORK"' EXIT
  for t in $TARGETS; do
    mkdir -p "$WORK/$t" "fuzz/artifacts/$t"
    cp -r "fuzz/corpus/$t/." "$WORK/$t/"
    if ! "$BIN/$t" -max_total_time="$SECS" -print_final_stats=1 \
        -artifact_prefix="fuzz/artifacts/$t/" "$WORK/$t" >"$WORK/$t.log" 2>&1; then
      tail -60 "$WORK/$t.log" >&2
      for a in "fuzz/artifacts/$t"/*; do
        say "$t: crash input $a, base64: $(base64 -w0 "$a")"
      done
      say "$t: FAILED (reproduce: $BIN/$t $(ls "fuzz/artifacts/$t"/* | head -1))"
      exit 1
    fi
    read -r runs cov ft corp size <<<"$(figures "$WORK/$t.log")"
    say "$t: ${SECS} s, $runs runs, cov $cov, ft $ft, corpus $corp ($size): no crash"
  done
  ;;
long)
  T=${1:-all}
  SECS=${2:-1800}
  RUNS=${3:-10000000}
  build
  [ "$T" = all ] && T=$TARGETS
  for t in $T; do
    mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
    log=$(mktemp)
    start=$(date +%s)
    status=ok
    "$BIN/$t" -max_total_time="$SECS" -runs="$RUNS" -print_final_stats=1 \
      -artifact_prefix="fuzz/artifacts/$t/" "fuzz/corpus/$t" >"$log" 2>&1 || status=CRASH
    secs=$(( $(date +%s) - start ))
    read -r runs cov ft corp size <<<"$(figures "$log")"
    [ -f fuzz/runs.md ] || printf '%s\n' "# Long fuzz runs" "" \
      "Appended by \`scripts/fuzz.sh long\`; x86_64 host, one libFuzzer process, ASan." "" \
      "## Totals" "" "## Runs" "" \
      "| date | commit | target | executions | seconds | corpus | coverage (edges) | features | result |" \
      "|---|---|---|---|---|---|---|---|---|" >fuzz/runs.md
    echo "| $(date -u +%F) | $(git rev-parse --short HEAD) | $t | $runs | $secs | $corp | $cov | $ft | $status |" >>fuzz/runs.md
    totals
    say "$t: $runs runs in $secs s, cov $cov, corpus $corp: $status"
    [ $status = ok ] || { tail -40 "$log" >&2; exit 1; }
    rm -f "$log"
  done
  ;;
planted)
  SECS=${1:-600}
  export CARGO_TARGET_DIR=target/fuzz-planted
  say "building virtqueue_blk with --cfg berth_planted_bug and debug assertions"
  RUSTFLAGS="--cfg berth_planted_bug" "${FUZZ[@]}" build --features libfuzzer -a virtqueue_blk >&2
  WORK=$(mktemp -d)
  trap 'rm -rf "$WORK"' EXIT
  cp -r fuzz/corpus/virtqueue_blk/. "$WORK/"
  start=$(date +%s)
  if "$CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release/virtqueue_blk" -max_total_time="$SECS" \
      -artifact_prefix="$WORK/" "$WORK" >"$WORK/log" 2>&1; then
    say "planted bug NOT found in $SECS s"
    exit 1
  fi
  grep -m1 -E "panicked at" "$WORK/log" >&2 || true
  say "planted bug found after $(( $(date +%s) - start )) s, $(grep -oE '^#[0-9]+' "$WORK/log" | tail -1 | tr -d '#') executions"
  ;;
cmin)
  T=${1:-all}
  build
  [ "$T" = all ] && T=$TARGETS
  for t in $T; do
    "${FUZZ[@]}" cmin --features libfuzzer "$t" >&2
  done
  ;;
*)
  sed -n '2,/^set -euo/p' "$0" | sed '$d' >&2
  exit 2
  ;;
esac
