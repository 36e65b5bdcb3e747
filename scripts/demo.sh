#!/usr/bin/env bash
# The main job: installs what is missing, builds (release), and runs the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
B=${AHA_BUILD:-build-release}
[ -f "$B/build.ninja" ] || meson setup "$B" --buildtype=release >/dev/null
ninja -C "$B" >/dev/null
echo "aha: tiny-qwen2 logprobs of a tokenised sentence"
exec "$B/cli/aha-tool/aha-tool" demo-logprobs --model tests/fixtures/tiny-qwen2
