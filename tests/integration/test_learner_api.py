#!/usr/bin/python3
"""aha-learner's job API on loopback, through ahactl and through Python grpcio.

usage: test_learner_api.py LEARNER AHACTL (fake|real)

LEARNER is aha-learner-fakerun (the real server, main.c, with the test runner of
learner_fake_runner.c: deterministic jobs, no models) or the real aha-learner. With `real`
only the runner-independent flow runs: health, a malformed spec rejected with its field named
(ahactl and grpcio), list, status, cancel, unreachable servers, tokens. With `fake` also: jobs
that succeed, fail and are cancelled while running; `ahactl watch` exit codes and its table;
WatchJob from grpcio with many watchers; plot and report; the Python client of
examples/clients/python; a learner stopped mid-job and restarted on the same --jobs-dir that
lists its jobs and resumes the interrupted one."""
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time

import grpc
from aha.v1 import learner_pb2 as pb, learner_pb2_grpc as pb_grpc
from svc import Service

LEARNER, AHACTL, MODE = sys.argv[1], sys.argv[2], sys.argv[3]
SRC = os.environ.get("AHA_SOURCE_ROOT", os.path.join(os.path.dirname(__file__), "..", ".."))
failures = checks = 0


def check(cond, msg):
    global failures, checks
    checks += 1
    if not cond:
        failures += 1
        print("not ok:", msg, file=sys.stderr, flush=True)


def ahactl(*args, server=None, env=None, timeout=60):
    argv = [AHACTL] + (["--server", server] if server else []) + list(args)
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)
    return r.returncode, r.stdout, r.stderr


def good_spec(name="ok", steps=6):
    return json.dumps({"kind": "grpo", "name": name, "model": "no/such/model",
                       "dataset": "no/such/data.jsonl", "steps": steps})


def wait_state(stub, job, states, timeout=30):
    end = time.time() + timeout
    while time.time() < end:
        st = stub.GetJob(pb.GetJobRequest(job_id=job)).state
        if st in states:
            return st
        time.sleep(0.05)
    return stub.GetJob(pb.GetJobRequest(job_id=job)).state


tmp = tempfile.mkdtemp(prefix="aha-learner-it-")
jobs_dir = os.path.join(tmp, "jobs")
bad = os.path.join(tmp, "bad.json")
with open(bad, "w") as f:
    f.write('{"kind": "grpo", "dataset": "d.jsonl", "steps": 3}')
good = os.path.join(tmp, "good.json")
with open(good, "w") as f:
    f.write(good_spec())

learner = Service([LEARNER, "--jobs-dir", jobs_dir, "--log-level", "warn"]).start()
addr = learner.target
ch = grpc.insecure_channel(addr)
stub = pb_grpc.LearnerStub(ch)

# --- runner-independent flow -------------------------------------------------------------
rc, out, err = ahactl("health", addr)
check(rc == 0 and "SERVING" in out, "health: rc %d %r %r" % (rc, out, err))

rc, out, err = ahactl("submit", bad, server=addr)
check(rc == 1 and "spec.model" in err, "ahactl submit malformed: rc %d, stderr %r" % (rc, err))
try:
    stub.SubmitJob(pb.SubmitJobRequest(spec_json='{"kind":"grpo","model":"m","dataset":"d",'
                                                 '"steps":2,"epsilonn":0.1}'))
    check(False, "grpcio: malformed spec accepted")
except grpc.RpcError as e:
    check(e.code() == grpc.StatusCode.INVALID_ARGUMENT and "spec.epsilonn" in e.details(),
          "grpcio malformed: %s %s" % (e.code(), e.details()))
try:
    stub.SubmitJob(pb.SubmitJobRequest(spec_json="{not json"))
    check(False, "grpcio: invalid JSON accepted")
except grpc.RpcError as e:
    check(e.code() == grpc.StatusCode.INVALID_ARGUMENT, "invalid JSON: %s" % e.code())

rc, out, err = ahactl("list", server=addr)
check(rc == 0 and "(no jobs)" in out, "empty list: %d %r %r" % (rc, out, err))
rc, out, err = ahactl("status", "j-20260101-000000-0000", server=addr)
check(rc == 1 and "NOT_FOUND" in err, "status of unknown job: %d %r" % (rc, err))
try:
    stub.GetJob(pb.GetJobRequest(job_id="../etc"))
    check(False, "path-like id found")
except grpc.RpcError as e:
    check(e.code() == grpc.StatusCode.NOT_FOUND, "path-like id: %s" % e.code())

rc, out, err = ahactl("--timeout-ms", "2000", "list", server="127.0.0.1:1")
check(rc == 3 and "127.0.0.1:1" in err and "unreachable" in err, "unreachable: %d %r" % (rc, err))
rc, out, err = ahactl("health", "127.0.0.1:1")
check(rc == 3 and "127.0.0.1:1" in err, "health unreachable: %d %r" % (rc, err))
rc, out, err = ahactl("submit", os.path.join(tmp, "missing.json"), server=addr)
check(rc == 2 and "missing.json" in err, "unreadable spec is a usage error: %d %r" % (rc, err))
rc, out, err = ahactl("frobnicate")
check(rc == 2, "unknown command: %d" % rc)

if MODE == "real":
    # A valid spec is accepted and queued; whatever the runner makes of the missing model,
    # the job ends (it is not the API's business here) and can be listed and inspected.
    rc, out, err = ahactl("submit", good, server=addr)
    job = out.strip()
    check(rc == 0 and re.fullmatch(r"j-\d{8}-\d{6}-[0-9a-f]{4}", job), "submit: %d %r %r" % (rc, out, err))
    st = wait_state(stub, job, {"succeeded", "failed", "cancelled"}, timeout=60)
    check(st == "failed", "a job on a missing model fails: %s" % st)
    rc, out, err = ahactl("status", job, server=addr)
    check(rc == 0 and job in out and "failed" in out, "status: %r" % out)
    rc, out, err = ahactl("list", server=addr)
    check(rc == 0 and job in out, "list shows it: %r" % out)
    rc, out, err = ahactl("watch", job, server=addr)
    check(rc == 1 and "[state] failed" in out, "watch of a failed job exits 1: %d %r" % (rc, out))

if MODE == "fake":
    # --- a job that succeeds, watched by ahactl ------------------------------------------
    rc, out, err = ahactl("submit", good, "--watch", server=addr)
    lines = out.splitlines()
    job = lines[0] if lines else ""
    check(rc == 0, "submit --watch of a good job exits 0: %d %r" % (rc, err))
    check(any(l.lstrip().startswith("stage") for l in lines), "table header printed: %r" % out)
    step_lines = [l for l in lines if re.search(r"\b\d+/6\b", l)]
    check(len(step_lines) == 6, "one line per step: %d\n%s" % (len(step_lines), out))
    check(any("#" in l and "%" in l for l in step_lines), "progress bar: %r" % step_lines)
    check("eval @ 5" in out, "eval line: %r" % out)
    check("[state] succeeded" in out, "final state: %r" % out)
    # --every 4 over the same (replayed) job: steps 4 and 6, the last one held back until the
    # final state, the eval line still shown; a bad count is a usage error naming it
    rc, out, err = ahactl("watch", job, "--every", "4", server=addr)
    every_lines = [l for l in out.splitlines() if re.search(r"\b\d+/6\b", l)]
    check(rc == 0 and len(every_lines) == 2 and "4/6" in every_lines[0] and "6/6" in every_lines[1],
          "watch --every 4 shows steps 4 and 6: %d %r" % (rc, every_lines))
    wl = out.splitlines()
    last = [i for i, l in enumerate(wl) if re.search(r"\b6/6\b", l)]
    done = [i for i, l in enumerate(wl) if l.startswith("[state] succeeded")]
    check("eval @ 5" in out and last and done and last[0] < done[0],
          "watch --every 4 keeps the eval line, the last step before the final state: %r" % out)
    rc, out, err = ahactl("watch", job, "--every", "0", server=addr)
    check(rc == 2 and "--every" in err and "'0'" in err, "watch --every 0 is a usage error: %d %r" % (rc, err))
    rc, out, err = ahactl("status", job, server=addr)
    check(rc == 0 and "succeeded" in out and "6/6" in out, "status: %r" % out)
    rc, out, err = ahactl("status", job, "--json", server=addr)
    js = json.loads(out) if rc == 0 else {}
    check(js.get("state") == "succeeded" and js.get("step") == 6 and
          js.get("last_metrics", {}).get("step") == 6, "status --json: %r" % out)
    svg = os.path.join(tmp, "plot.svg")
    rc, out, err = ahactl("plot", job, "-o", svg, server=addr)
    check(rc == 0 and os.path.exists(svg) and "<svg" in open(svg).read(), "plot: %d %r" % (rc, err))
    rc, out, err = ahactl("report", job, server=addr)
    check(rc == 0 and "pass@1" in out and "| eval" in out.replace("|  eval", "| eval"),
          "report: %d %r %r" % (rc, out, err))
    rc, out2, err = ahactl("report", job, "--jobs-dir", jobs_dir)
    check(rc == 0 and out2 == out, "report from the jobs dir equals the API's")
    rc, out, err = ahactl("cancel", job, server=addr)
    check(rc == 1 and "FAILED_PRECONDITION" in err, "cancel finished job: %d %r" % (rc, err))

    # --- a pipeline: stages in GetJob, the stage table in ahactl --------------------------
    pipe = os.path.join(tmp, "pipe.json")
    with open(pipe, "w") as f:
        json.dump({"kind": "pipeline", "stages": [
            {"name": "cold", "kind": "sft", "model": "m", "steps": 3,
             "dataset": {"path": "d.jsonl", "format": "sft"}},
            {"name": "rl", "kind": "grpo", "model": "${stages.cold.checkpoint}",
             "dataset": "d.jsonl", "steps": 4}]}, f)
    rc, out, err = ahactl("submit", pipe, "--watch", server=addr)
    job_p = out.splitlines()[0] if out else ""
    check(rc == 0 and "[stage] rl" in out and "pipeline: 1/2 stages done" in out,
          "pipeline watch shows the stages: %d %r" % (rc, out[-800:]))
    check(re.search(r"(?m)^cold +3/3 ", out) and re.search(r"(?m)^rl +4/4 ", out),
          "stage column in the table: %r" % out[-800:])
    j = stub.GetJob(pb.GetJobRequest(job_id=job_p))
    check([(s.name, s.kind, s.state) for s in j.stages] == [("cold", "sft", "done"), ("rl", "grpo", "done")],
          "GetJob stages: %r" % [(s.name, s.kind, s.state, s.output) for s in j.stages])
    check(j.stages and j.stages[0].output == "ckpt", "stage output: %r" % [s.output for s in j.stages])
    rc, out, err = ahactl("status", job_p, server=addr)
    check(rc == 0 and "pipeline: 2/2 stages done" in out, "status of a pipeline: %r" % out)

    # --- failure ---------------------------------------------------------------------------
    spec = os.path.join(tmp, "fail.json")
    with open(spec, "w") as f:
        f.write(good_spec("fail", 5))
    rc, out, err = ahactl("submit", spec, "--watch", server=addr)
    check(rc == 1 and "[state] failed: fake failure at step 2" in out, "failed job: %d %r" % (rc, out))
    job_f = out.splitlines()[0]
    j = stub.GetJob(pb.GetJobRequest(job_id=job_f))
    check(j.state == "failed" and "fake failure" in j.error, "GetJob error: %r" % j.error)

    # --- cancel a running job while several grpcio watchers follow it --------------------
    job_s = stub.SubmitJob(pb.SubmitJobRequest(spec_json=good_spec("slow", 200))).job_id
    check(wait_state(stub, job_s, {"running"}) == "running", "slow job runs")
    seen = [[], [], []]

    def follow(i):
        for ev in stub.WatchJob(pb.WatchJobRequest(job_id=job_s, from_start=True)):
            seen[i].append((ev.type, ev.state, ev.step))

    ts = [threading.Thread(target=follow, args=(i,)) for i in range(3)]
    for t in ts:
        t.start()
    watch = subprocess.Popen([AHACTL, "--server", addr, "watch", job_s], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)
    rc, out, err = ahactl("cancel", job_s, server=addr)
    check(rc == 0 and "cancel requested" in out, "cancel running: %d %r %r" % (rc, out, err))
    wout, werr = watch.communicate(timeout=30)
    check(watch.returncode == 1 and "[state] cancelled" in wout,
          "watch of a cancelled job exits 1: %d %r" % (watch.returncode, wout[-300:]))
    for t in ts:
        t.join(30)
    for i in range(3):
        states = [s for (ty, s, _) in seen[i] if ty == "state"]
        steps = [st for (ty, _, st) in seen[i] if ty == "metrics"]
        check(states[-1:] == ["cancelled"] and states[:2] == ["queued", "running"],
              "watcher %d states %r" % (i, states))
        check(steps == list(range(1, len(steps) + 1)) and len(steps) >= 2,
              "watcher %d: every step once, in order: %r" % (i, steps[:20]))
    check(stub.GetJob(pb.GetJobRequest(job_id=job_s)).state == "cancelled", "cancelled")

    # --- the Python client of examples/clients/python --------------------------------------
    client = os.path.join(SRC, "examples", "clients", "python", "aha_client.py")
    if os.path.exists(client):
        env = dict(os.environ)
        r = subprocess.run([sys.executable, client, "--server", addr, "submit", good],
                           capture_output=True, text=True, timeout=60, env=env)
        check(r.returncode == 0 and "submitted j-" in r.stdout and "succeeded" in r.stdout,
              "python client submit: %d %r %r" % (r.returncode, r.stdout[-400:], r.stderr[-400:]))
        r = subprocess.run([sys.executable, client, "--server", addr, "submit", bad],
                           capture_output=True, text=True, timeout=60, env=env)
        check(r.returncode == 2 and "spec.model" in r.stderr, "python client, bad spec: %r" % r.stderr)

    # --- stop mid-job, restart on the same jobs dir: listed and resumed --------------------
    job_r = stub.SubmitJob(pb.SubmitJobRequest(spec_json=good_spec("slow", 12))).job_id
    job_q = stub.SubmitJob(pb.SubmitJobRequest(spec_json=good_spec("ok", 3))).job_id
    end = time.time() + 30
    while time.time() < end and stub.GetJob(pb.GetJobRequest(job_id=job_r)).step < 3:
        time.sleep(0.05)
    before = stub.GetJob(pb.GetJobRequest(job_id=job_r)).step
    check(before >= 3, "slow job progressed: %d" % before)
    ch.close()
    code = learner.stop(signal.SIGTERM)
    check(code == 0, "learner drained on SIGTERM: %s" % code)
    learner = Service([LEARNER, "--jobs-dir", jobs_dir, "--log-level", "warn"]).start()
    addr = learner.target
    ch = grpc.insecure_channel(addr)
    stub = pb_grpc.LearnerStub(ch)
    jobs = {j.id: j.state for j in stub.ListJobs(pb.ListJobsRequest()).jobs}
    check(len(jobs) >= 6 and jobs.get(job) == "succeeded" and jobs.get(job_f) == "failed" and
          jobs.get(job_s) == "cancelled", "old jobs listed after restart: %r" % jobs)
    check(jobs.get(job_r) in ("queued", "running"), "interrupted job re-queued: %r" % jobs.get(job_r))
    check(wait_state(stub, job_q, {"succeeded"}, 60) == "succeeded", "queued job ran after it")
    check(stub.GetJob(pb.GetJobRequest(job_id=job_r)).state == "succeeded",
          "the interrupted job finished first")
    steps = [ev.step for ev in stub.WatchJob(pb.WatchJobRequest(job_id=job_r, from_start=True))
             if ev.type == "metrics"]
    check(steps == list(range(1, 13)), "steps across the restart, each once: %r" % steps)
    hist = [ev.message for ev in stub.WatchJob(pb.WatchJobRequest(job_id=job_r, history_only=True))
            if ev.type == "state"]
    check(any("re-queued" in m for m in hist), "history shows the re-queue: %r" % hist)

    # --- a job token ----------------------------------------------------------------------
    ch.close()
    learner.stop()
    tok = os.path.join(tmp, "job-token")
    with open(tok, "w") as f:
        f.write("s3cret-%d\n" % os.getpid())
    learner = Service([LEARNER, "--jobs-dir", jobs_dir, "--job-token-file", tok,
                       "--log-level", "warn"]).start()
    addr = learner.target
    rc, out, err = ahactl("list", server=addr)
    check(rc == 1 and "UNAUTHENTICATED" in err and "--token-file" in err, "no token: %d %r" % (rc, err))
    rc, out, err = ahactl("--token-file", tok, "list", server=addr)
    check(rc == 0 and job in out, "with --token-file: %d %r" % (rc, err))
    env = dict(os.environ, AHA_JOB_TOKEN=open(tok).read().strip())
    rc, out, err = ahactl("status", job, server=addr, env=env)
    check(rc == 0 and "succeeded" in out, "with AHA_JOB_TOKEN: %d %r" % (rc, err))
    rc, out, err = ahactl("health", addr)
    check(rc == 0, "health needs no token: %d %r" % (rc, err))

    # --- TLS: the health check of containers (`ahactl --tls-ca FILE health ADDR`) and jobs ---
    if subprocess.run(["sh", "-c", "command -v openssl"], capture_output=True).returncode == 0:
        crt, key = os.path.join(tmp, "tls.crt"), os.path.join(tmp, "tls.key")
        r = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                            "-subj", "/CN=localhost", "-addext",
                            "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", key, "-out", crt],
                           capture_output=True)
        check(r.returncode == 0, "openssl: %r" % r.stderr[-300:])
        learner.stop()
        learner = Service([LEARNER, "--jobs-dir", jobs_dir, "--tls-cert", crt, "--tls-key", key,
                           "--job-token-file", tok, "--log-level", "warn"]).start()
        addr = "localhost:%d" % learner.port
        rc, out, err = ahactl("--tls-ca", crt, "health", addr)
        check(rc == 0 and "SERVING" in out, "TLS health: %d %r %r" % (rc, out, err))
        rc, out, err = ahactl("--timeout-ms", "3000", "health", addr)
        check(rc != 0, "plaintext health against a TLS server fails: %d" % rc)
        rc, out, err = ahactl("--tls-ca", crt, "--token-file", tok, "status", job, server=addr)
        check(rc == 0 and "succeeded" in out, "TLS + token status: %d %r" % (rc, err))
        # mutual TLS: the learner wants client certificates signed by its --tls-ca
        learner.stop()
        learner = Service([LEARNER, "--jobs-dir", jobs_dir, "--tls-cert", crt, "--tls-key", key,
                           "--tls-ca", crt, "--log-level", "warn"]).start()
        addr = "localhost:%d" % learner.port
        rc, out, err = ahactl("--tls-ca", crt, "--tls-cert", crt, "--tls-key", key, "list", server=addr)
        check(rc == 0 and job in out, "mutual TLS list: %d %r" % (rc, err))
        rc, out, err = ahactl("--tls-ca", crt, "--tls-cert", crt, "--tls-key", key, "health", addr)
        check(rc == 0, "mutual TLS health: %d %r" % (rc, err))
        rc, out, err = ahactl("--timeout-ms", "3000", "--tls-ca", crt, "list", server=addr)
        check(rc != 0, "no client certificate, no answer: %d" % rc)
        rc, out, err = ahactl("--tls-ca", crt, "--tls-cert", crt, "list", server=addr)
        check(rc == 2, "--tls-cert without --tls-key is a usage error: %d" % rc)
    else:
        print("openssl not found: TLS case skipped", file=sys.stderr)

ch.close()
code = learner.stop()
check(code == 0, "learner exit status %s" % code)
subprocess.run(["rm", "-rf", tmp])
print("%s: %d checks, %d failed" % (os.path.basename(__file__), checks, failures))
sys.exit(1 if failures else 0)
