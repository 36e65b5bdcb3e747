#!/usr/bin/env bash
# The Dockerfiles pass dockerfile-utils (npm; the linter of the Dockerfile language server,
# installed by scripts/install-deps.sh into .dev/npm) and aha's own policy checks
# (deploy/tools/dockerfile_check.py). Without dockerfile-utils (no npm registry) the test
# runs the policy checks and says the linter was skipped.
set -euo pipefail
root=${AHA_SOURCE_ROOT:?}
files=("$root/deploy/docker/Dockerfile" "$root/deploy/docker/Dockerfile.cpu")
python3 "$root/deploy/tools/dockerfile_check.py" --deps "$root/scripts/install-deps.sh" "${files[@]}"
lint=$root/.dev/npm/node_modules/.bin/dockerfile-utils
[ -x "$lint" ] || lint=$(command -v dockerfile-utils || true)
if [ -z "$lint" ]; then echo "dockerfile-utils not installed: linter skipped"; exit 0; fi
for f in "${files[@]}"; do "$lint" lint "$f"; echo "dockerfile-utils lint: $(basename "$f") ok"; done
# The linter must reject a broken Dockerfile, or passing proves nothing.
bad=$(mktemp); trap 'rm -f "$bad"' EXIT
printf 'FROM debian:12-slim\nEXPOSE not-a-port\n' >"$bad"
if "$lint" lint "$bad" >/dev/null; then echo "dockerfile-utils accepted an invalid EXPOSE"; exit 1; fi
