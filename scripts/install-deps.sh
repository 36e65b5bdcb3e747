#!/usr/bin/env bash
# Installs the Debian 12 packages aha builds and tests with (as root; skips what is there).
set -euo pipefail
pkgs=(build-essential clang libclang-rt-14-dev meson ninja-build pkg-config
      libgrpc-dev protobuf-c-compiler libprotobuf-c-dev libuv1-dev libjansson-dev
      libpcre2-dev libutf8proc-dev libopenblas-dev
      python3 python3-grpcio python3-protobuf protobuf-compiler protobuf-compiler-grpc python3-numpy
      python3-yaml docker-compose openssl)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}" >&2
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Deployment checks (tests/deploy): kubectl renders the kustomize overlays offline. Any
# kubectl will do; Debian's kubernetes-client is installed only where none exists, since it
# would collide with another kubectl package's /usr/bin/kubectl.
if ! command -v kubectl >/dev/null; then
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends kubernetes-client >/dev/null
fi
# The Dockerfile linter (dockerfile-utils, plain JavaScript) from the npm registry into .dev/npm;
# without npm or the registry the lint test runs only aha's own Dockerfile checks.
lint_dir="$(cd "$(dirname "$0")/.." && pwd)/.dev/npm"
if [ ! -x "$lint_dir/node_modules/.bin/dockerfile-utils" ]; then
  if ! command -v npm >/dev/null; then
    if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
    { $SUDO apt-get update -qq &&
      DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends npm >/dev/null; } ||
      echo "install-deps.sh: npm did not install; the Dockerfile linter will be skipped" >&2
  fi
  if command -v npm >/dev/null; then
    mkdir -p "$lint_dir"
    (cd "$lint_dir" && timeout 300 npm install --no-audit --no-fund --silent --prefix . dockerfile-utils@0.16.3 >/dev/null) ||
      echo "install-deps.sh: npm install dockerfile-utils failed; the Dockerfile linter will be skipped" >&2
  fi
fi
