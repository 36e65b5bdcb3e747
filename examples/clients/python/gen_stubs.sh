#!/bin/sh
# Generates the Python gRPC stubs of aha's public API (proto/aha/v1/*.proto) into DIR
# (default: a new temporary directory) and prints DIR.
# Stubs are build output: never commit them. Needs protoc and grpc_python_plugin (Debian:
# protobuf-compiler, protobuf-compiler-grpc).
#   export PYTHONPATH=$(sh examples/clients/python/gen_stubs.sh)
set -eu
# (grpc/health/v1 is left out on purpose: a generated top-level "grpc" directory would shadow
# the grpcio package.)
here=$(cd "$(dirname "$0")" && pwd)
proto=${AHA_PROTO_DIR:-$here/../../../proto}
out=${1:-$(mktemp -d "${TMPDIR:-/tmp}/aha-stubs.XXXXXX")}
plugin=${GRPC_PYTHON_PLUGIN:-$(command -v grpc_python_plugin || echo /usr/bin/grpc_python_plugin)}
mkdir -p "$out"
cd "$proto"
protoc -I . --python_out="$out" --grpc_python_out="$out" \
  --plugin=protoc-gen-grpc_python="$plugin" aha/v1/*.proto
echo "$out"
