#!/usr/bin/python3
"""Load on loopback: many concurrent calls against aha-reward, aha-rollout and aha-refpolicy.

  - SCORE_CALLS (default 1000) Score calls issued at once (4 items each) on one channel: each
    call ends OK or RESOURCE_EXHAUSTED with a retry hint (the server's concurrent-call limit);
    RESOURCE_EXHAUSTED calls are retried with jittered backoff until every call succeeded;
  - GEN_STREAMS (default 64) Generate streams at once (1 prompt x n = 2 each): every stream
    delivers its n completions, or ends RESOURCE_EXHAUSTED;
  - REF_CALLS (default 64) LogProbs calls at once;
  - the same Score and Generate load against a reward service with --max-concurrent 8 and a
    rollout worker with --max-queue 24: backpressure must show as RESOURCE_EXHAUSTED with a
    retry hint (and every Score call still succeeds after retries);
  - any other status code fails the test; p50/p99 latency of each kind and the peak RSS
    (VmHWM) of each service are printed;
  - every service drains and exits 0 on SIGTERM afterwards. In the ASan build (CI) the
    services run under LeakSanitizer (ASAN_OPTIONS detect_leaks=1 from the test env), so a
    leak makes that exit code non-zero and fails the test.

usage: load_test.py AHA-REWARD AHA-ROLLOUT AHA-REFPOLICY [SCORE_CALLS GEN_STREAMS REF_CALLS]
(fixtures: $AHA_FIXTURES/tiny-qwen2, default tests/fixtures)"""
import os
import random
import shutil
import sys
import tempfile
import threading
import time

import grpc
from aha.v1 import refpolicy_pb2, refpolicy_pb2_grpc, reward_pb2, reward_pb2_grpc
from aha.v1 import rollout_pb2, rollout_pb2_grpc
from svc import Service

failures = checks = 0


def check(cond, msg):
    global failures, checks
    checks += 1
    if not cond:
        failures += 1
        print("not ok:", msg, file=sys.stderr)


def pct(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100.0 * (len(xs) - 1))))]


def vm_hwm_mib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def score_load(target, n_calls):
    """n_calls Score calls at once; RESOURCE_EXHAUSTED ones again after a backoff."""
    ch = grpc.insecure_channel(target, options=[("grpc.max_concurrent_streams", 100000)])
    stub = reward_pb2_grpc.RewardStub(ch)
    items = [reward_pb2.ScoreItem(id="%d" % i, prompt="What is %d + 2?" % i,
                                  completion="<think>%d plus 2</think> <answer>%d</answer>" % (i, i + 2),
                                  reference_answer="%d" % (i + 2)) for i in range(4)]
    req = reward_pb2.ScoreRequest(items=items)
    pending = list(range(n_calls))
    first_lat, exhausted, other, hints = [], 0, [], set()
    done_at = {}
    t_start = time.monotonic()
    rounds = 0
    while pending and rounds < 50:
        rounds += 1
        t0 = {}
        futs = {}
        for i in pending:
            t0[i] = time.monotonic()
            futs[i] = stub.Score.future(req, timeout=120)
        nxt = []
        for i, f in futs.items():
            try:
                r = f.result()
                lat = time.monotonic() - t0[i]
                if len(r.results) != 4 or r.results[0].id != "0":
                    other.append("call %d: bad reply" % i)
                first_lat.append(lat)
                done_at[i] = time.monotonic() - t_start
            except grpc.RpcError as e:
                if e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                    exhausted += 1
                    hints.add(e.details())
                    nxt.append(i)
                else:
                    other.append("call %d: %s %s" % (i, e.code(), e.details()))
        pending = nxt
        if pending:
            time.sleep(0.05 * rounds * (0.75 + 0.5 * random.random()))
    ch.close()
    return first_lat, exhausted, other, hints, pending, list(done_at.values())


def gen_load(target, n_streams):
    ch = grpc.insecure_channel(target)
    stub = rollout_pb2_grpc.RolloutStub(ch)
    lat, exhausted, other, hints = [], [0], [], set()
    lock = threading.Lock()
    barrier = threading.Barrier(n_streams)

    def one(k):
        req = rollout_pb2.GenerateRequest(
            prompts=[rollout_pb2.Prompt(id="p%d" % k, token_ids=[1 + k % 50, 7, 9, 11])], n=2,
            sampling=rollout_pb2.SamplingParams(temperature=1.0, max_new_tokens=16, seed=k + 1))
        barrier.wait()
        t0 = time.monotonic()
        try:
            got = [(c.prompt_id, c.index) for c in stub.Generate(req, timeout=120)]
            with lock:
                if sorted(got) != [("p%d" % k, 0), ("p%d" % k, 1)]:
                    other.append("stream %d: completions %s" % (k, got))
                lat.append(time.monotonic() - t0)
        except grpc.RpcError as e:
            with lock:
                if e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                    exhausted[0] += 1
                    hints.add(e.details())
                else:
                    other.append("stream %d: %s %s" % (k, e.code(), e.details()))

    th = [threading.Thread(target=one, args=(k,)) for k in range(n_streams)]
    for t in th:
        t.start()
    for t in th:
        t.join()
    ch.close()
    return lat, exhausted[0], other, hints


def ref_load(target, n_calls):
    ch = grpc.insecure_channel(target)
    stub = refpolicy_pb2_grpc.RefPolicyStub(ch)
    reqs = [refpolicy_pb2.LogProbsRequest(sequences=[refpolicy_pb2.Sequence(
        id="s%d" % k, token_ids=[(k + t) % 500 + 1 for t in range(48)], prompt_len=16)]) for k in range(n_calls)]
    t0 = time.monotonic()
    futs = [stub.LogProbs.future(r, timeout=120) for r in reqs]
    lat, exhausted, other = [], 0, []
    for k, f in enumerate(futs):
        try:
            r = f.result()
            if len(r.results) != 1 or len(r.results[0].logprobs) != 32:
                other.append("call %d: bad reply" % k)
            lat.append(time.monotonic() - t0)  # issued together: time to completion
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                exhausted += 1
            else:
                other.append("call %d: %s %s" % (k, e.code(), e.details()))
    ch.close()
    return lat, exhausted, other


def main():
    reward, rollout, refpolicy = sys.argv[1:4]
    n_score = int(sys.argv[4]) if len(sys.argv) > 4 else 1000
    n_gen = int(sys.argv[5]) if len(sys.argv) > 5 else 64
    n_ref = int(sys.argv[6]) if len(sys.argv) > 6 else 64
    fx = os.environ.get("AHA_FIXTURES", "tests/fixtures")
    with tempfile.TemporaryDirectory() as tmp:
        mdir = os.path.join(tmp, "policy")
        os.makedirs(mdir)
        for f in ("config.json", "model.safetensors", "generation_config.json"):
            shutil.copy(os.path.join(fx, "tiny-qwen2", f), mdir)
        rw = Service([reward, "--log-level", "warn"], timeout=60).start()
        ro = Service([rollout, "--model", mdir, "--max-seq-len", "64", "--log-level", "warn"], timeout=60).start()
        rp = Service([refpolicy, "--model", mdir, "--log-level", "warn"], timeout=60).start()
        try:
            t = time.monotonic()
            s_lat, s_ex, s_other, hints, s_left, s_done = score_load(rw.target, n_score)
            t_score = time.monotonic() - t
            t = time.monotonic()
            g_lat, g_ex, g_other, _ = gen_load(ro.target, n_gen)
            t_gen = time.monotonic() - t
            t = time.monotonic()
            r_lat, r_ex, r_other = ref_load(rp.target, n_ref)
            t_ref = time.monotonic() - t
            hwm = {"reward": vm_hwm_mib(rw.proc.pid), "rollout": vm_hwm_mib(ro.proc.pid),
                   "refpolicy": vm_hwm_mib(rp.proc.pid)}
        finally:
            codes = {"reward": rw.stop(), "rollout": ro.stop(), "refpolicy": rp.stop()}
        # tight limits: the load meets them
        rw2 = Service([reward, "--log-level", "warn", "--max-concurrent", "8"], timeout=60).start()
        ro2 = Service([rollout, "--model", mdir, "--max-seq-len", "64", "--max-batch", "8", "--max-queue", "24",
                       "--log-level", "warn"], timeout=60).start()
        try:
            s2_lat, s2_ex, s2_other, hints2, s2_left, s2_done = score_load(rw2.target, n_score)
            g2_lat, g2_ex, g2_other, ghints2 = gen_load(ro2.target, n_gen)
        finally:
            codes["reward --max-concurrent 8"] = rw2.stop()
            codes["rollout --max-queue 24"] = ro2.stop()
    check(not s2_other and not g2_other, "tight limits: only OK or RESOURCE_EXHAUSTED: %s" % (s2_other + g2_other)[:5])
    check(s2_ex > 0 and not s2_left, "tight reward: %d RESOURCE_EXHAUSTED, every call done after retries (%d left)"
          % (s2_ex, len(s2_left)))
    check(g2_ex > 0 and len(g2_lat) > 0, "tight rollout: %d streams ok, %d RESOURCE_EXHAUSTED" % (len(g2_lat), g2_ex))
    check(all("retry" in h for h in hints2 | ghints2), "tight limits: retry hints: %s" % sorted(hints2 | ghints2)[:3])

    for what, other in (("Score", s_other), ("Generate", g_other), ("LogProbs", r_other)):
        check(not other, "%s: only OK or RESOURCE_EXHAUSTED: %s" % (what, other[:5]))
    check(not s_left, "every Score call succeeded after retries (%d left)" % len(s_left))
    check(all("retry" in h for h in hints), "RESOURCE_EXHAUSTED carries a retry hint: %s" % sorted(hints)[:3])
    check(len(g_lat) + g_ex == n_gen and len(g_lat) > 0, "Generate: %d ok + %d exhausted of %d" % (len(g_lat), g_ex, n_gen))
    check(len(r_lat) + r_ex == n_ref and len(r_lat) > 0, "LogProbs: %d ok + %d exhausted of %d" % (len(r_lat), r_ex, n_ref))
    for name, rc in codes.items():
        check(rc == 0, "%s exits 0 after the load (leaks fail it under LeakSanitizer): %s" % (name, rc))

    print("load on loopback (latencies in ms)")
    print("%-34s %8s %8s %8s %10s %8s" % ("", "ok", "exhaust", "p50", "p99", "wall s"))
    print("%-34s %8d %8d %8.1f %10.1f %8.2f" % ("Score x%d (4 items), per attempt" % n_score, len(s_lat), s_ex,
                                                  1e3 * pct(s_lat, 50), 1e3 * pct(s_lat, 99), t_score))
    print("%-34s %8s %8s %8.1f %10.1f" % ("Score, issue to success incl. retries", "", "", 1e3 * pct(s_done, 50),
                                           1e3 * pct(s_done, 99)))
    print("%-34s %8d %8d %8.1f %10.1f %8.2f" % ("Generate x%d streams (n=2, 16 tok)" % n_gen, len(g_lat), g_ex,
                                                  1e3 * pct(g_lat, 50), 1e3 * pct(g_lat, 99), t_gen))
    print("%-34s %8d %8d %8.1f %10.1f %8.2f" % ("LogProbs x%d (48 tok)" % n_ref, len(r_lat), r_ex,
                                                  1e3 * pct(r_lat, 50), 1e3 * pct(r_lat, 99), t_ref))
    print("%-34s %8d %8d %8.1f %10.1f" % ("Score x%d, --max-concurrent 8" % n_score, len(s2_lat), s2_ex,
                                           1e3 * pct(s2_lat, 50), 1e3 * pct(s2_lat, 99)))
    print("%-34s %8s %8s %8.1f %10.1f" % ("  issue to success incl. retries", "", "", 1e3 * pct(s2_done, 50),
                                           1e3 * pct(s2_done, 99)))
    print("%-34s %8d %8d %8.1f %10.1f" % ("Generate x%d, --max-queue 24" % n_gen, len(g2_lat), g2_ex,
                                           1e3 * pct(g2_lat, 50), 1e3 * pct(g2_lat, 99)))
    print("peak RSS (VmHWM): " + ", ".join("%s %.1f MiB" % kv for kv in hwm.items()))
    print("exit codes after SIGTERM: %s" % codes)
    print("load_test: %d of %d checks failed" % (failures, checks) if failures else
          "load_test: all %d checks passed" % checks)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
