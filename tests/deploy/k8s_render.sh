#!/usr/bin/env bash
# Renders one kustomize directory with the kubectl on PATH (Debian 12: kubernetes-client 1.20,
# embedded kustomize v2.0.3; newer ones work too) and checks the result offline with
# deploy/tools/k8s_check.py. Usage: k8s_render.sh DIR [k8s_check.py options...]
set -euo pipefail
root=${AHA_SOURCE_ROOT:?}
dir=$1; shift
command -v kubectl >/dev/null || { echo "kubectl not installed (scripts/install-deps.sh installs kubernetes-client)"; exit 1; }
out=$(mktemp); trap 'rm -f "$out" "$out.err"' EXIT
if ! kubectl kustomize "$root/$dir" >"$out" 2>"$out.err"; then
  cat "$out.err"; echo "kubectl kustomize $dir failed"; exit 1
fi
grep -v '^# Warning: .* is deprecated' "$out.err" || true
python3 "$root/deploy/tools/k8s_check.py" "$out" "$@"
