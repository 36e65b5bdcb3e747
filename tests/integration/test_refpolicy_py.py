#!/usr/bin/python3
"""aha-refpolicy through Python grpcio (stubs generated from proto/ at build time).

Expected values come from PyTorch (tests/fixtures/*/forward.safetensors token_logprobs) and,
after a weight refresh, from `aha-tool logprobs` on the model that was pushed (a random model
written by `aha-tool init-model`): LogProbs with prompt_len 1 and ragged prompts, malformed
requests, UpdateWeights from Python (F32 chunks read from the new model's safetensors), a
truncated upload that must change nothing, Info, health.

usage: test_refpolicy_py.py PATH/aha-refpolicy PATH/aha-tool"""
import os
import subprocess
import sys
import tempfile

import grpc
import numpy as np
import sfile
from aha.v1 import refpolicy_pb2, refpolicy_pb2_grpc, weights_pb2
from grpc_health_v1 import health_pb2, health_pb2_grpc
from svc import Service

failures = checks = 0


def check(cond, msg):
    global failures, checks
    checks += 1
    if not cond:
        failures += 1
        print("not ok:", msg, file=sys.stderr)


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def score(stub, ids, prompt_lens):
    req = refpolicy_pb2.LogProbsRequest(sequences=[
        refpolicy_pb2.Sequence(id="s%d" % i, token_ids=[int(t) for t in row], prompt_len=pl)
        for i, (row, pl) in enumerate(zip(ids, prompt_lens))])
    return stub.LogProbs(req, timeout=30)


def chunks(model_file, version, skip_last=False):
    return sfile.weight_chunks(model_file, version, skip_last, chunk=3000)

def main():
    refpolicy, tool = sys.argv[1], sys.argv[2]
    fx = os.environ.get("AHA_FIXTURES", "tests/fixtures")
    mdir = os.path.join(fx, "tiny-qwen2")
    fwd = sfile.read(os.path.join(mdir, "forward.safetensors"))
    ids = sfile.array(fwd["input_ids"])
    want = sfile.array(fwd["token_logprobs"])
    B, T = ids.shape
    with tempfile.TemporaryDirectory() as tmp, \
            Service([refpolicy, "--model", mdir, "--max-batch-tokens", "40",
                     "--log-level", "warn"]) as svc:
        ch = grpc.insecure_channel(svc.target)
        stub = refpolicy_pb2_grpc.RefPolicyStub(ch)
        h = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=10)
        check(h.status == health_pb2.HealthCheckResponse.SERVING, "health SERVING")

        r = score(stub, ids, [1] * B)
        got = np.array([list(x.logprobs) for x in r.results])
        check(got.shape == (B, T - 1), "shape %s" % (got.shape,))
        check(rel(got, want) < 1e-4, "fixture logprobs rel err %g" % rel(got, want))
        check([x.id for x in r.results] == ["s%d" % i for i in range(B)], "ids in order")

        pls = [1 + (3 * i) % (T - 1) for i in range(B)]
        r = score(stub, ids, pls)
        ok = all(np.allclose(list(x.logprobs), want[i, pls[i] - 1:], rtol=0, atol=1e-4)
                 for i, x in enumerate(r.results))
        check(ok, "ragged prompt_len slices")

        for bad, what in [([[1, 2, 3]], [0]), ([[1, 2, 1 << 20]], [1]), ([[]], [1]),
                          ([[1, 2]], [3])]:
            try:
                score(stub, bad, what)
                check(False, "malformed %s accepted" % (bad,))
            except grpc.RpcError as e:
                check(e.code() == grpc.StatusCode.INVALID_ARGUMENT and "s0" in e.details(),
                      "malformed %s -> %s %s" % (bad, e.code(), e.details()))

        # weight refresh: a random model with the same config
        newdir = os.path.join(tmp, "new")
        subprocess.run([tool, "init-model", "--config", os.path.join(mdir, "config.json"),
                        "--out", newdir, "--seed", "11"], check=True)
        out = os.path.join(tmp, "lp.safetensors")
        subprocess.run([tool, "logprobs", "--model", newdir, "--input",
                        os.path.join(mdir, "forward.safetensors"), "--output", out], check=True)
        want_new = sfile.array(sfile.read(out)["token_logprobs"])
        check(rel(want_new, want) > 1e-2, "the new model differs")
        mfile = os.path.join(newdir, "model.safetensors")

        try:
            stub.UpdateWeights(chunks(mfile, 5, skip_last=True), timeout=30)
            check(False, "truncated upload accepted")
        except grpc.RpcError as e:
            check(e.code() == grpc.StatusCode.INVALID_ARGUMENT, "truncated -> %s %s" %
                  (e.code(), e.details()))
        r = score(stub, ids, [1] * B)
        got = np.array([list(x.logprobs) for x in r.results])
        check(rel(got, want) < 1e-4 and r.policy_version == 0, "truncated upload changed nothing")

        rep = stub.UpdateWeights(chunks(mfile, 5), timeout=30)
        check(rep.version == 5 and rep.bytes == os.path.getsize(mfile) - 8 -
              int.from_bytes(open(mfile, "rb").read(8), "little"), "reply %s" % rep)
        r = score(stub, ids, [1] * B)
        got = np.array([list(x.logprobs) for x in r.results])
        check(rel(got, want_new) < 1e-4, "after refresh rel err %g" % rel(got, want_new))
        check(r.policy_version == 5, "policy_version %d" % r.policy_version)

        info = stub.Info(weights_pb2.InfoRequest(), timeout=10)
        check(info.policy_version == 5 and '"vocab_size"' in info.config_json and
              info.tokens_generated > 0, "Info %s" % info.model_name)
        ch.close()
    check(svc.returncode == 0, "clean exit on SIGTERM (%s)" % svc.returncode)
    print("test_refpolicy_py: %d of %d checks failed" % (failures, checks) if failures else
          "test_refpolicy_py: all %d checks passed" % checks, file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
