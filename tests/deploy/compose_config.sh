#!/usr/bin/env bash
# docker-compose config (Debian's docker-compose 1.29, which validates against the compose
# schema without a Docker engine) on each profile, with and without the TLS override, in a
# directory with no .env so the defaults are what gets checked.
set -euo pipefail
root=${AHA_SOURCE_ROOT:?}
command -v docker-compose >/dev/null || { echo "docker-compose not installed (scripts/install-deps.sh)"; exit 1; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
cp "$root/deploy/compose/docker-compose.yml" "$root/deploy/compose/docker-compose.tls.yml" "$tmp/"
cd "$tmp"
for profile in gpu cpu; do
  docker-compose --profile "$profile" config -q
  docker-compose -f docker-compose.yml -f docker-compose.tls.yml --profile "$profile" config -q
  echo "profile $profile: config valid (plain and TLS)"
done
# A compose file with an error must be rejected, or the check above proves nothing.
sed "s/^    read_only: true/    read_onlyx: true/" docker-compose.yml > broken.yml
if docker-compose -f broken.yml --profile gpu config -q 2>/dev/null; then
  echo "docker-compose accepted an unknown service option: the validation is not working"; exit 1
fi
echo "an invalid file is rejected"
