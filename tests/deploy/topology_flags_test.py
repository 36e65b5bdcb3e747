#!/usr/bin/env python3
"""The flags deploy/services.json gives each service are flags the real binary accepts: every
service of examples/topology-local.json whose binary this build has is started with exactly
those arguments (only --listen moved to a free loopback port and --jobs-dir to a temporary
directory, so parallel tests cannot collide), must answer grpc.health.v1 Check with SERVING,
and must stop on SIGTERM. A binary not built yet is reported and skipped; if none is built the
test is skipped (exit 77)."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

root = os.environ["AHA_SOURCE_ROOT"]
build = os.environ["AHA_BUILD_ROOT"]
topo = json.load(open(os.environ.get("AHA_TOPOLOGY", os.path.join(root, "examples", "topology-local.json"))))

tmp = tempfile.mkdtemp(prefix="aha-topo-")
# health.proto's generated module would be grpc/health/v1/..., shadowing grpcio; generate it
# as a top-level module instead (the service name inside stays grpc.health.v1.Health).
shutil.copy(os.path.join(root, "proto", "grpc", "health", "v1", "health.proto"), tmp)
subprocess.run(["protoc", "-I", tmp, "--python_out=" + tmp, "--grpc_python_out=" + tmp,
                "--plugin=protoc-gen-grpc_python=/usr/bin/grpc_python_plugin", os.path.join(tmp, "health.proto")],
               check=True)
sys.path.insert(0, tmp)
import grpc  # noqa: E402
import health_pb2  # noqa: E402
import health_pb2_grpc  # noqa: E402


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serving(addr, deadline):
    last = "no answer"
    while time.time() < deadline:
        try:
            with grpc.insecure_channel(addr) as ch:
                r = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=1)
                if r.status == health_pb2.HealthCheckResponse.SERVING:
                    return None
                last = "status %d" % r.status
        except grpc.RpcError as e:
            last = "%s: %s" % (e.code().name, e.details())
        time.sleep(0.2)
    return last


failures = ran = 0
for svc in topo["services"]:
    rel = svc["binary"]
    exe = os.path.join(build, rel[len("build/"):]) if rel.startswith("build/") else rel
    if not os.path.exists(exe):
        print("skip %s: %s not built yet" % (svc["name"], exe))
        continue
    args = list(svc["args"])
    port = free_port()
    for i, a in enumerate(args[:-1]):
        if a == "--listen":
            args[i + 1] = "127.0.0.1:%d" % port
        if a == "--jobs-dir":
            args[i + 1] = os.path.join(tmp, "jobs")
    log = open(os.path.join(tmp, svc["name"] + ".log"), "w+")
    p = subprocess.Popen([exe] + args, cwd=root, stdout=log, stderr=subprocess.STDOUT)
    ran += 1
    why = "not started"
    deadline = time.time() + 30
    while time.time() < deadline:
        if p.poll() is not None:
            why = "exited with %d before serving" % p.returncode
            break
        last = serving("127.0.0.1:%d" % port, time.time() + 1)
        if last is None:
            why = None
            break
        why = "not SERVING within 30 s (%s)" % last
    if why is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            why = "did not stop within 15 s of SIGTERM"
    else:
        p.kill()
        p.wait()
    log.seek(0)
    if why:
        failures += 1
        print("FAIL %s %s: %s\n%s" % (svc["name"], " ".join(args), why, log.read()[-3000:]))
    else:
        print("ok %s: serves with %s" % (svc["name"], " ".join(args)))
shutil.rmtree(tmp, ignore_errors=True)
if ran == 0:
    print("no service binary built yet")
    sys.exit(77)
print("%d services started, %d failures" % (ran, failures))
sys.exit(1 if failures else 0)
