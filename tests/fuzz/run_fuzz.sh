#!/bin/sh
# run_fuzz.sh TARGET CORPUS_DIR [libFuzzer flags]: a bounded libFuzzer run (AHA_FUZZ_SECONDS,
# default 10) over the committed corpus, which stays untouched: libFuzzer writes new inputs
# into the first corpus directory given, a temp dir here. Crash inputs go to
# $AHA_BUILD_ROOT/fuzz-artifacts/ so they outlive the run.
set -eu
exe=$1
corpus=$2
shift 2
[ -d "$corpus" ] || { echo "run_fuzz.sh: no corpus directory $corpus" >&2; exit 2; }
work=$(mktemp -d "${TMPDIR:-/tmp}/aha-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM
artifacts=${AHA_BUILD_ROOT:-$work}/fuzz-artifacts
mkdir -p "$artifacts"
dict=
[ -f "$corpus.dict" ] && dict="-dict=$corpus.dict"
# shellcheck disable=SC2086
"$exe" -max_total_time="${AHA_FUZZ_SECONDS:-10}" -timeout=5 -rss_limit_mb=2048 \
  -print_final_stats=1 -artifact_prefix="$artifacts/$(basename "$exe")-" $dict "$@" "$work" "$corpus"
