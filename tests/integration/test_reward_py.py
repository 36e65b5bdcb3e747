#!/usr/bin/python3
"""aha-reward through a client that is not aha's C code: Python grpcio with stubs generated
from proto/ at build time (tests/integration/meson.build).

Expected rewards are computed here, independently, from the rules of issue 3 on generated
items whose answers are integers (written plainly or as "N.0"), with or without the
<think>/<answer> format, in English, scored with language "", "en" or "zh", under random
weights. Then: limits (10 MB completion, too many items, bad config_json), GroupAnswers,
health, concurrent calls, --config weights and a clean SIGTERM drain.

usage: test_reward_py.py PATH/aha-reward"""
import concurrent.futures
import json
import os
import random
import sys
import tempfile

import grpc
from aha.v1 import reward_pb2, reward_pb2_grpc
from grpc_health_v1 import health_pb2, health_pb2_grpc
from svc import Service

failures = 0
checks = 0


def check(cond, msg):
    global failures, checks
    checks += 1
    if not cond:
        failures += 1
        print("not ok:", msg, file=sys.stderr)


WORDS = ["first", "we", "compute", "the", "sum", "then", "divide", "check", "again", "wait",
         "so", "answer", "is", "clearly", "right"]


def make_item(rng, i):
    """A ScoreItem and its expected components, computed from the rules."""
    truth = rng.randint(-5000, 5000)
    correct = rng.random() < 0.5
    answer = truth if correct else truth + rng.choice([-7, -1, 1, 3, 100])
    text = str(answer) + (".0" if rng.random() < 0.3 else "")
    think = " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 300)))
    think += " %d plus %d" % (rng.randint(0, 99), rng.randint(0, 99))  # digits are not words
    shape = rng.choice(["tagged", "tagged", "no_think", "boxed"])
    if shape == "tagged":
        completion = "<think>%s</think>\n<answer>%s</answer>" % (think, text)
        fmt = 1.0
    elif shape == "no_think":
        completion = "%s <answer>%s</answer>" % (think, text)
        fmt = 0.0
    else:
        completion = "<think>%s</think> so the answer is \\boxed{%s}." % (think, text)
        fmt = 0.0
    lang = rng.choice(["", "en", "zh"])
    comps = {"accuracy": 1.0 if correct else 0.0, "format": fmt}
    if lang:
        # every word of the chain of thought is Latin-script English
        comps["language"] = 1.0 if lang == "en" else 0.0
    item = reward_pb2.ScoreItem(id="item-%d" % i, prompt="Question %d?" % i,
                                completion=completion, reference_answer=str(truth),
                                language=lang, task="math")
    return item, comps


def total_of(comps, w):
    return sum(w[k] * v for k, v in comps.items())


def check_results(resp, items, expected, w, what):
    check(len(resp.results) == len(items), "%s: %d results for %d items" %
          (what, len(resp.results), len(items)))
    bad = 0
    for it, exp, r in zip(items, expected, resp.results):
        got = dict(r.components)
        ok = (r.id == it.id and not r.error and got == exp and
              abs(r.total - total_of(exp, w)) < 1e-9)
        if not ok:
            bad += 1
            if bad <= 5:
                print("  %s: %s got %s total %g error %r, want %s total %g" %
                      (what, it.id, got, r.total, r.error, exp, total_of(exp, w)),
                      file=sys.stderr)
    check(bad == 0, "%s: %d of %d items differ" % (what, bad, len(items)))


def main():
    binary = sys.argv[1]
    rng = random.Random(1234)
    default_w = {"accuracy": 1.0, "format": 1.0, "language": 0.0}
    opts = [("grpc.max_send_message_length", 64 << 20),
            ("grpc.max_receive_message_length", 64 << 20)]
    with Service([binary, "--max-items", "300", "--log-level", "warn"]) as svc:
        ch = grpc.insecure_channel(svc.target, options=opts)
        stub = reward_pb2_grpc.RewardStub(ch)

        hs = health_pb2_grpc.HealthStub(ch)
        h = hs.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
        check(h.status == health_pb2.HealthCheckResponse.SERVING, "health SERVING")
        h = hs.Check(health_pb2.HealthCheckRequest(service="aha.v1.Reward"), timeout=10)
        check(h.status == health_pb2.HealthCheckResponse.SERVING, "aha.v1.Reward SERVING")

        # default weights, then random per-call weights
        for rep in range(4):
            pairs = [make_item(rng, rep * 1000 + i) for i in range(256)]
            items = [p[0] for p in pairs]
            expected = [p[1] for p in pairs]
            if rep == 0:
                w, cfg = default_w, ""
            else:
                w = {k: round(rng.uniform(0, 3), 3) for k in default_w}
                cfg = json.dumps({"weights": w})
            resp = stub.Score(reward_pb2.ScoreRequest(items=items, config_json=cfg), timeout=30)
            check_results(resp, items, expected, w, "batch %d" % rep)

        # a 10 MB completion: that item gets an error, the others are scored
        pairs = [make_item(rng, 9000 + i) for i in range(3)]
        items = [p[0] for p in pairs]
        items[1] = reward_pb2.ScoreItem(id="huge", completion="<think>" + "a" * (10 << 20),
                                        reference_answer="1")
        resp = stub.Score(reward_pb2.ScoreRequest(items=items), timeout=60)
        check(len(resp.results) == 3, "huge batch: 3 results")
        if len(resp.results) == 3:
            check(resp.results[1].id == "huge" and resp.results[1].error != "" and
                  resp.results[1].total == 0, "10 MB completion -> item error (%r)" %
                  resp.results[1].error)
            for k in (0, 2):
                r, exp = resp.results[k], pairs[k][1]
                check(not r.error and dict(r.components) == exp and
                      abs(r.total - total_of(exp, default_w)) < 1e-9,
                      "item %d next to the huge one still scored" % k)

        # over the item limit, bad config: INVALID_ARGUMENT
        many = [reward_pb2.ScoreItem(id=str(i), completion="x") for i in range(301)]
        for req, what in [(reward_pb2.ScoreRequest(items=many), "301 items"),
                          (reward_pb2.ScoreRequest(items=many[:1], config_json="{nope"),
                           "bad json"),
                          (reward_pb2.ScoreRequest(items=many[:1],
                                                   config_json='{"weights":{"acc":1}}'),
                           "unknown weight")]:
            try:
                stub.Score(req, timeout=10)
                check(False, "%s: no error" % what)
            except grpc.RpcError as e:
                check(e.code() == grpc.StatusCode.INVALID_ARGUMENT,
                      "%s -> %s %s" % (what, e.code(), e.details()))

        # an empty request is fine
        resp = stub.Score(reward_pb2.ScoreRequest(), timeout=10)
        check(len(resp.results) == 0, "empty request -> no results")

        # GroupAnswers: equal values group together (cons@k voting)
        g = stub.GroupAnswers(reward_pb2.GroupAnswersRequest(
            answers=["1/2", "0.5", "3", "\\frac{1}{2}", "3.0", "7"]), timeout=10)
        check(list(g.group) == [0, 0, 2, 0, 2, 5], "groups %s" % list(g.group))
        g = stub.GroupAnswers(reward_pb2.GroupAnswersRequest(
            answers=["<answer>4</answer>", "so \\boxed{4}", "no answer here",
                     "<answer>5</answer>"], extract=True), timeout=10)
        check(list(g.group) == [0, 0, 2, 3] and list(g.extracted)[:2] == ["4", "4"],
              "extracted groups %s %s" % (list(g.group), list(g.extracted)))

        # concurrent calls on one channel
        def one(seed):
            r = random.Random(seed)
            pairs = [make_item(r, i) for i in range(64)]
            resp = stub.Score(reward_pb2.ScoreRequest(items=[p[0] for p in pairs]), timeout=30)
            return all(dict(x.components) == p[1] and x.id == p[0].id
                       for x, p in zip(resp.results, pairs)) and len(resp.results) == 64
        with concurrent.futures.ThreadPoolExecutor(8) as ex:
            oks = list(ex.map(one, range(32)))
        check(all(oks), "concurrent calls: %d of %d right" % (sum(oks), len(oks)))
        ch.close()
    check(svc.returncode == 0, "SIGTERM drain exit code %s" % svc.returncode)

    # weights from --config
    with tempfile.TemporaryDirectory() as d:
        cfg = os.path.join(d, "reward.json")
        w = {"accuracy": 2.0, "format": 0.5, "language": 1.0}
        with open(cfg, "w") as f:
            json.dump({"weights": w}, f)
        with Service([binary, "--config", cfg, "--log-level", "warn"]) as svc:
            ch = grpc.insecure_channel(svc.target)
            stub = reward_pb2_grpc.RewardStub(ch)
            pairs = [make_item(rng, 20000 + i) for i in range(100)]
            items = [p[0] for p in pairs]
            resp = stub.Score(reward_pb2.ScoreRequest(items=items), timeout=30)
            check_results(resp, items, [p[1] for p in pairs], w, "--config weights")
            ch.close()
        check(svc.returncode == 0, "second service exit code %s" % svc.returncode)
        with open(cfg, "w") as f:
            f.write('{"weights": {"accuracy": -1}}')
        with tempfile.TemporaryFile() as errf:
            import subprocess
            rc = subprocess.run([binary, "--config", cfg, "--listen", "127.0.0.1:0"],
                                stderr=errf, timeout=20).returncode
            errf.seek(0)
            msg = errf.read().decode(errors="replace")
        check(rc == 2 and "accuracy" in msg, "bad --config refused (%d: %s)" % (rc, msg.strip()))

    if failures:
        print("reward_python: %d of %d checks failed" % (failures, checks), file=sys.stderr)
        return 1
    print("reward_python: all %d checks passed" % checks, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
