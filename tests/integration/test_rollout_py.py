#!/usr/bin/python3
"""aha-rollout (with aha-refpolicy) through Python grpcio (stubs generated from proto/).

The model is tests/fixtures/tiny-qwen2 plus a byte-level tokenizer.json (aha-tool
make-tokenizer), so text prompts tokenise to their UTF-8 bytes. Checked here:
  - Generate with id and text prompts, n = 4, streams every (prompt, index) exactly once, with
    finish reasons, versions and the prompt ids the model saw;
  - consistency: every completion's logprobs equal aha-refpolicy's LogProbs of the same
    sequence on the same model within 1e-4;
  - greedy samples of a group are identical; the same seed gives the same tokens;
  - UpdateWeights to another model (aha-tool init-model) from Python, F32 chunks: the next
    completions' logprobs equal refpolicy's after the same push, and policy_version follows;
    a truncated upload is INVALID_ARGUMENT and changes nothing;
  - RESOURCE_EXHAUSTED for a request that cannot fit, INVALID_ARGUMENT for bad parameters;
  - Info; health; clean SIGTERM drain.

usage: test_rollout_py.py PATH/aha-rollout PATH/aha-refpolicy PATH/aha-tool"""
import os
import shutil
import subprocess
import sys
import tempfile

import grpc
import numpy as np
import sfile
from aha.v1 import refpolicy_pb2, refpolicy_pb2_grpc, rollout_pb2, rollout_pb2_grpc, weights_pb2
from grpc_health_v1 import health_pb2, health_pb2_grpc
from svc import Service

failures = checks = 0


def check(cond, msg):
    global failures, checks
    checks += 1
    if not cond:
        failures += 1
        print("not ok:", msg, file=sys.stderr)


def generate(stub, prompts, n, **sp):
    req = rollout_pb2.GenerateRequest(prompts=prompts, n=n,
                                      sampling=rollout_pb2.SamplingParams(**sp))
    return list(stub.Generate(req, timeout=60))


def ref_logprobs(ref, comps):
    req = refpolicy_pb2.LogProbsRequest(sequences=[
        refpolicy_pb2.Sequence(id="%s/%d" % (c.prompt_id, c.index),
                               token_ids=list(c.prompt_token_ids) + list(c.token_ids),
                               prompt_len=len(c.prompt_token_ids)) for c in comps])
    return ref.LogProbs(req, timeout=60)


def max_diff(comps, resp):
    worst = 0.0
    for c, r in zip(comps, resp.results):
        a, b = np.array(c.logprobs), np.array(r.logprobs)
        if a.shape != b.shape:
            return float("inf")
        if len(a):
            worst = max(worst, float(np.max(np.abs(a - b))))
    return worst


def chunks(model_file, version, skip_last=False):
    return sfile.weight_chunks(model_file, version, skip_last, chunk=5000)

def main():
    rollout, refpolicy, tool = sys.argv[1:4]
    fx = os.environ.get("AHA_FIXTURES", "tests/fixtures")
    with tempfile.TemporaryDirectory() as tmp:
        mdir = os.path.join(tmp, "policy")
        os.makedirs(mdir)
        for f in ("config.json", "model.safetensors", "generation_config.json"):
            shutil.copy(os.path.join(fx, "tiny-qwen2", f), mdir)
        subprocess.run([tool, "make-tokenizer", "--out", mdir], check=True)
        with Service([rollout, "--model", mdir, "--max-batch", "6", "--max-seq-len", "96",
                      "--log-level", "warn"]) as ro, \
                Service([refpolicy, "--model", mdir, "--log-level", "warn"]) as rp:
            rch, pch = grpc.insecure_channel(ro.target), grpc.insecure_channel(rp.target)
            stub, ref = rollout_pb2_grpc.RolloutStub(rch), refpolicy_pb2_grpc.RefPolicyStub(pch)
            h = health_pb2_grpc.HealthStub(rch).Check(health_pb2.HealthCheckRequest(), timeout=10)
            check(h.status == health_pb2.HealthCheckResponse.SERVING, "health")

            prompts = [rollout_pb2.Prompt(id="ids", token_ids=[5, 17, 300, 41, 2]),
                       rollout_pb2.Prompt(id="text", text="What is 2+3? <think>")]
            comps = generate(stub, prompts, 4, temperature=1.0, top_p=0.95, max_new_tokens=16,
                             seed=3)
            keys = sorted((c.prompt_id, c.index) for c in comps)
            check(keys == sorted((p, i) for p in ("ids", "text") for i in range(4)),
                  "every (prompt, index) once: %s" % keys)
            text_ids = list("What is 2+3? ".encode()) + [257]  # <think> is id 257 here
            for c in comps:
                want = [5, 17, 300, 41, 2] if c.prompt_id == "ids" else text_ids
                check(list(c.prompt_token_ids) == want, "prompt ids of %s" % c.prompt_id)
                check(c.finish_reason in ("stop", "length") and len(c.token_ids) == len(c.logprobs),
                      "finish reason %s" % c.finish_reason)
                check(c.policy_version == 0 and not c.weights_changed, "version 0")
            d = max_diff(comps, ref_logprobs(ref, comps))
            check(d < 1e-4, "rollout logprobs = refpolicy logprobs (max |d| %g)" % d)
            again = generate(stub, prompts, 4, temperature=1.0, top_p=0.95, max_new_tokens=16,
                             seed=3)
            tok = {(c.prompt_id, c.index): list(c.token_ids) for c in comps}
            check(all(tok[(c.prompt_id, c.index)] == list(c.token_ids) for c in again),
                  "same seed, same tokens")
            greedy = generate(stub, prompts[:1], 3, temperature=0, max_new_tokens=10)
            check(len({tuple(c.token_ids) for c in greedy}) == 1, "greedy samples identical")

            # errors
            for kw, code in [(dict(max_new_tokens=500), grpc.StatusCode.RESOURCE_EXHAUSTED),
                             (dict(temperature=-1.0, max_new_tokens=4), grpc.StatusCode.INVALID_ARGUMENT),
                             (dict(top_p=1.5, max_new_tokens=4), grpc.StatusCode.INVALID_ARGUMENT)]:
                try:
                    generate(stub, prompts, 2, **kw)
                    check(False, "%s accepted" % kw)
                except grpc.RpcError as e:
                    check(e.code() == code, "%s -> %s %s" % (kw, e.code(), e.details()))
            try:
                generate(stub, [rollout_pb2.Prompt(id="oov", token_ids=[1, 99999])], 1,
                         max_new_tokens=4)
                check(False, "out-of-vocabulary prompt accepted")
            except grpc.RpcError as e:
                check(e.code() == grpc.StatusCode.INVALID_ARGUMENT, "oov -> %s" % e.code())

            # weight push from Python to both services
            newdir = os.path.join(tmp, "new")
            subprocess.run([tool, "init-model", "--config", os.path.join(mdir, "config.json"),
                            "--out", newdir, "--seed", "17"], check=True)
            mfile = os.path.join(newdir, "model.safetensors")
            try:
                stub.UpdateWeights(chunks(mfile, 9, skip_last=True), timeout=30)
                check(False, "truncated upload accepted")
            except grpc.RpcError as e:
                check(e.code() == grpc.StatusCode.INVALID_ARGUMENT, "truncated -> %s %s" %
                      (e.code(), e.details()))
            after_bad = generate(stub, prompts, 2, temperature=1.0, max_new_tokens=8, seed=4)
            check(all(c.policy_version == 0 for c in after_bad), "still version 0")
            d = max_diff(after_bad, ref_logprobs(ref, after_bad))
            check(d < 1e-4, "truncated upload changed nothing (max |d| %g)" % d)

            rep = stub.UpdateWeights(chunks(mfile, 9), timeout=30)
            check(rep.version == 9, "reply version %d" % rep.version)
            new = generate(stub, prompts, 2, temperature=1.0, max_new_tokens=8, seed=4)
            check(all(c.policy_version == 9 for c in new), "completions report version 9")
            d_old = max_diff(new, ref_logprobs(ref, new))
            check(d_old > 1e-3, "the new policy differs from the old reference (%g)" % d_old)
            ref.UpdateWeights(chunks(mfile, 9), timeout=30)
            d = max_diff(new, ref_logprobs(ref, new))
            check(d < 1e-4, "after the push: rollout = refpolicy on the new model (max |d| %g)" % d)

            info = stub.Info(weights_pb2.InfoRequest(), timeout=10)
            check(info.policy_version == 9 and info.max_batch == 6 and info.tokens_generated > 0 and
                  '"hidden_size"' in info.config_json, "Info %s" % info)
            rch.close()
            pch.close()
        check(ro.returncode == 0 and rp.returncode == 0, "clean exits %s %s" %
              (ro.returncode, rp.returncode))
    print("test_rollout_py: %d of %d checks failed" % (failures, checks) if failures else
          "test_rollout_py: all %d checks passed" % checks, file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
