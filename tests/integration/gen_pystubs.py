#!/usr/bin/env python3
"""Generate Python grpcio stubs for the .proto files of proto/ into a build folder.

usage: gen_pystubs.py PROTOC GRPC_PYTHON_PLUGIN PROTO_ROOT OUT_DIR STAMP PROTO...

Output: OUT_DIR/aha/v1/*_pb2.py and *_pb2_grpc.py (import aha.v1.reward_pb2 ...), and the
health service as OUT_DIR/grpc_health_v1/health_pb2*.py (import grpc_health_v1.health_pb2):
a module path under grpc/ would be shadowed by the grpcio package itself. The proto package
(grpc.health.v1) and so the wire names stay the same. The stamp file is what meson tracks;
tests put OUT_DIR on PYTHONPATH."""
import os
import shutil
import subprocess
import sys

protoc, plugin, root, out, stamp = sys.argv[1:6]
protos = [os.path.relpath(p, root) for p in sys.argv[6:]]
os.makedirs(out, exist_ok=True)
gen = [protoc, "--python_out=" + out, "--grpc_python_out=" + out,
       "--plugin=protoc-gen-grpc_python=" + plugin]
aha = [p for p in protos if not p.startswith("grpc" + os.sep)]
subprocess.run(gen + ["-I", root] + aha, check=True)
health = [p for p in protos if p.startswith("grpc" + os.sep)]
if health:
    src = os.path.join(out, "_health_src")
    os.makedirs(os.path.join(src, "grpc_health_v1"), exist_ok=True)
    moved = []
    for p in health:
        dst = os.path.join("grpc_health_v1", os.path.basename(p))
        shutil.copyfile(os.path.join(root, p), os.path.join(src, dst))
        moved.append(dst)
    subprocess.run(gen + ["-I", src] + moved, check=True)
with open(stamp, "w") as f:
    f.write("\n".join(protos) + "\n")
