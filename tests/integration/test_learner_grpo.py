#!/usr/bin/python3
"""A short GRPO job end to end: the four real services started by `ahactl up`, jobs submitted
through ahactl and through Python grpcio, metrics streamed by WatchJob, and a learner killed
with SIGKILL mid-job, restarted by the supervisor, that resumes the job from its checkpoint and
computes the same losses as a job that was never interrupted.

usage: test_learner_grpo.py AHACTL AHA-TOOL NAME=BINARY... (reward, rollout, refpolicy, learner)

The model is a tiny random Qwen2 (aha-tool init-model) with a byte-level tokenizer; the data
are additions. What is checked is the plumbing, not learning: every step's record arrives once
per run, the job ends succeeded, and steps after the resume equal the uninterrupted run's."""
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

import grpc
from aha.v1 import learner_pb2 as pb, learner_pb2_grpc as pb_grpc

AHACTL, TOOL = sys.argv[1], sys.argv[2]
BINS = dict(a.split("=", 1) for a in sys.argv[3:])
failures = checks = 0


def check(cond, msg):
    global failures, checks
    checks += 1
    if not cond:
        failures += 1
        print("not ok:", msg, file=sys.stderr, flush=True)


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def ahactl(*args, timeout=300):
    r = subprocess.run([AHACTL] + list(args), capture_output=True, text=True, timeout=timeout)
    return r.returncode, r.stdout, r.stderr


def up_state(run):
    try:
        with open(os.path.join(run, "up.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


tmp = tempfile.mkdtemp(prefix="aha-grpo-it-")
base = os.path.join(tmp, "base")
cfg = os.path.join(tmp, "config.json")
with open(cfg, "w") as f:
    json.dump({"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 32,
               "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
               "num_key_value_heads": 2, "max_position_embeddings": 1024, "rms_norm_eps": 1e-6,
               "rope_theta": 10000.0, "tie_word_embeddings": True, "vocab_size": 261,
               "eos_token_id": 256, "initializer_range": 0.02}, f)
subprocess.run([TOOL, "init-model", "--config", cfg, "--out", base, "--seed", "11"], check=True,
               capture_output=True)
subprocess.run([TOOL, "make-tokenizer", "--out", base] +
               sum([["--special", s] for s in ["<|endoftext|>", "<think>", "</think>", "<answer>",
                                                "</answer>"]], []),
               check=True, capture_output=True)
train, evalp = os.path.join(tmp, "train.jsonl"), os.path.join(tmp, "eval.jsonl")
with open(train, "w") as f:
    for i in range(16):
        f.write(json.dumps({"prompt": "What is %d + 7?" % i, "answer": str(i + 7)}) + "\n")
with open(evalp, "w") as f:
    for i in range(3):
        f.write(json.dumps({"prompt": "What is %d + 9?" % i, "answer": str(i + 9)}) + "\n")

names = ["reward", "refpolicy", "rollout", "learner"]
ports = dict(zip(names, free_ports(4)))
a = {n: "127.0.0.1:%d" % p for n, p in ports.items()}
args = {
    "reward": ["--threads", "2"],
    "refpolicy": ["--model", base, "--device", "cpu"],
    "rollout": ["--model", base, "--device", "cpu", "--max-seq-len", "1024"],
    "learner": ["--jobs-dir", os.path.join(tmp, "jobs"), "--device", "cpu", "--reward", a["reward"],
                "--refpolicy", a["refpolicy"], "--rollout", a["rollout"], "--rpc-timeout-ms", "60000"],
}
topo = {"format": "aha.topology/v1", "services": [
    {"name": n, "binary": BINS[n], "args": ["--listen", a[n]] + args[n] + ["--log-level", "info"],
     "port": ports[n], "restart": True} for n in names]}
tp = os.path.join(tmp, "topology.json")
with open(tp, "w") as f:
    json.dump(topo, f)
run = os.path.join(tmp, "run")
rc, out, err = ahactl("up", tp, "--detach", "--run-dir", run, "--grace-s", "20")
check(rc == 0, "ahactl up: %d %r %r" % (rc, out, err))

spec = {"kind": "grpo", "model": base, "dataset": train, "template": "r1-zero", "G": 4,
        "questions_per_step": 2, "steps": 4, "mu": 2, "micro_batch": 3, "max_new_tokens": 12,
        "temperature": 1.0, "lr": 1e-2, "beta": 0.04, "checkpoint_every": 2, "seed": 3,
        "eval": {"dataset": evalp, "every": 0, "k": 2, "max_new_tokens": 8}}
sp = os.path.join(tmp, "job.json")
with open(sp, "w") as f:
    json.dump(spec, f)


def step_records(job, stub):
    """The job's step records (history), the last one of each step."""
    recs = {}
    for ev in stub.WatchJob(pb.WatchJobRequest(job_id=job, history_only=True)):
        if ev.type == "metrics" and ev.json:
            r = json.loads(ev.json)
            if r.get("type") == "step":
                recs[r["step"]] = r
    return recs


if rc == 0:
    # --- job A through ahactl, watched to the end ---------------------------------------------
    t0 = time.time()
    rc, out, err = ahactl("--server", a["learner"], "submit", sp, "--watch")
    lines = out.splitlines()
    job_a = lines[0] if lines else ""
    check(rc == 0 and "[state] succeeded" in out, "job A via ahactl: %d\n%s\n%s" % (rc, out[-1500:], err[-800:]))
    check(sum(1 for l in lines if "/4 " in l and "[" in l) == 4, "4 step lines:\n%s" % out)
    check(sum(1 for l in lines if "eval @" in l) == 2, "2 eval lines:\n%s" % out)
    print("job A: %.1f s" % (time.time() - t0), flush=True)

    ch = grpc.insecure_channel(a["learner"])
    stub = pb_grpc.LearnerStub(ch)
    rec_a = step_records(job_a, stub)
    check(sorted(rec_a) == [1, 2, 3, 4], "A's records: %r" % sorted(rec_a))

    # --- job B through grpcio; the learner is SIGKILLed after step 3 --------------------------
    job_b = stub.SubmitJob(pb.SubmitJobRequest(spec_json=json.dumps(spec))).job_id
    learner_pid = [s for s in up_state(run)["services"] if s["name"] == "learner"][0]["pid"]
    killed = False
    seen = []
    try:
        for ev in stub.WatchJob(pb.WatchJobRequest(job_id=job_b, from_start=True)):
            if ev.type == "metrics":
                seen.append(ev.step)
                if ev.step == 3 and not killed:
                    os.kill(learner_pid, signal.SIGKILL)
                    killed = True
    except grpc.RpcError as e:
        check(killed, "watch broke before the kill: %s" % e)
    check(killed and seen == [1, 2, 3], "B streamed steps 1-3 before the kill: %r" % seen)
    ch.close()

    # the supervisor restarts the learner; the job was running, so it is resumed first
    end = time.time() + 120
    state = None
    while time.time() < end:
        st = up_state(run)
        lp = [s for s in (st or {}).get("services", []) if s["name"] == "learner"]
        if lp and lp[0]["pid"] not in (0, learner_pid) and lp[0]["state"] == "healthy":
            break
        time.sleep(0.2)
    ch = grpc.insecure_channel(a["learner"])
    stub = pb_grpc.LearnerStub(ch)
    while time.time() < end:
        try:
            state = stub.GetJob(pb.GetJobRequest(job_id=job_b), wait_for_ready=True, timeout=10).state
        except grpc.RpcError:
            state = None
        if state in ("succeeded", "failed", "cancelled"):
            break
        time.sleep(0.3)
    check(state == "succeeded", "B resumed and succeeded: %s" % state)
    jobs = {j.id: j.state for j in stub.ListJobs(pb.ListJobsRequest()).jobs}
    check(jobs.get(job_a) == "succeeded", "A still listed after the restart: %r" % jobs)
    rec_b = step_records(job_b, stub)
    check(sorted(rec_b) == [1, 2, 3, 4], "B's records: %r" % sorted(rec_b))
    for s in (3, 4):
        la, lb = rec_a.get(s, {}).get("loss"), rec_b.get(s, {}).get("loss")
        check(la is not None and la == lb, "step %d: resumed loss %r, uninterrupted %r" % (s, lb, la))
    hist = [ev.message for ev in stub.WatchJob(pb.WatchJobRequest(job_id=job_b, history_only=True))
            if ev.type == "state"]
    check(any("re-queued" in m for m in hist), "B's history tells of the restart: %r" % hist)
    rc, out, err = ahactl("--server", a["learner"], "plot", job_b, "-o", os.path.join(tmp, "b.svg"))
    check(rc == 0, "plot of the resumed job: %d %r" % (rc, err))
    ch.close()

rc, out, err = ahactl("down", "--run-dir", run)
check(rc == 0, "down: %d %r %r" % (rc, out, err))
if failures:
    for n in names:
        p = os.path.join(run, "logs", n + ".log")
        if os.path.exists(p):
            print("---- %s ----\n%s" % (p, open(p).read()[-2000:]), file=sys.stderr)
subprocess.run(["rm", "-rf", tmp])
print("%s: %d checks, %d failed" % (os.path.basename(__file__), checks, failures))
sys.exit(1 if failures else 0)
