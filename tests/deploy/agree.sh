#!/usr/bin/env bash
# compose, every rendered k8s overlay and the local topology agree with services.json on
# services, ports and flags (deploy/tools/check_agree.py).
set -euo pipefail
root=${AHA_SOURCE_ROOT:?}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
args=()
for d in "$root"/deploy/k8s/base "$root"/deploy/k8s/overlays/*/; do
  name=$(basename "$d")
  kubectl kustomize "$d" >"$tmp/$name.yaml" 2>/dev/null
  args+=(--k8s "$name=$tmp/$name.yaml")
done
python3 "$root/deploy/tools/check_agree.py" --spec "$root/deploy/services.json" \
  --local "$root/examples/topology-local.json" --compose "$root/deploy/compose/docker-compose.yml" "${args[@]}"
