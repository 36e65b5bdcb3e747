#!/usr/bin/python3
"""aha-reward's code items (task "code:python" / "code:c") through Python grpcio: a correct
and a wrong program in each language, a hostile one (reads /etc/passwd, whose real content
is the expected output), malformed test cases (item error) and an unknown language, mixed
with a math item in one request; results in request order.

usage: test_code_reward_py.py PATH/aha-reward"""
import json
import sys

import grpc
from aha.v1 import reward_pb2, reward_pb2_grpc
from svc import Service

failures = 0


def check(cond, msg):
    global failures
    if not cond:
        failures += 1
        print("not ok:", msg, file=sys.stderr)


def item(i, task, program, lang, cases):
    comp = "<think>plan</think>\n<answer>\n```%s\n%s```\n</answer>" % (lang, program)
    return reward_pb2.ScoreItem(id=str(i), completion=comp, task=task,
                                reference_answer=json.dumps(cases))


def main():
    sq = [{"input": "3\n", "output": "9\n"}, {"input": "12\n", "output": "144"}]
    passwd = open("/etc/passwd").read()
    items = [
        item(0, "code:python", "print(int(input()) ** 2)\n", "python", sq),
        item(1, "code:python", "print(int(input()) * 2)\n", "python", sq),
        item(2, "code:c", "#include <stdio.h>\nint main(void){int n; scanf(\"%d\", &n);"
             " printf(\"%d\\n\", n * n); return 0;}\n", "c", sq),
        item(3, "code:c", "int main(void){ return 0; }\n", "c", sq),
        item(4, "code:python", "print(open('/etc/passwd').read(), end='')\n", "python",
             [{"input": "", "output": passwd}]),
        reward_pb2.ScoreItem(id="5", task="code:python", completion="```python\nprint(1)\n```",
                             reference_answer="not json"),
        reward_pb2.ScoreItem(id="6", task="code:rust", completion="x", reference_answer="[]"),
        reward_pb2.ScoreItem(id="7", task="math", completion="<think>x</think><answer>4</answer>",
                             reference_answer="4"),
    ]
    # generous wall clock: CI runs this beside other tests on 2 cores (the limits have their
    # own unit test, tests/unit/sandbox)
    with Service([sys.argv[1], "--code-wall-s", "60"]) as svc:
        stub = reward_pb2_grpc.RewardStub(grpc.insecure_channel(svc.target))
        resp = stub.Score(reward_pb2.ScoreRequest(items=items), timeout=120)
        r = list(resp.results)
        check([x.id for x in r] == [str(i) for i in range(8)], "order")
        acc = [x.components["accuracy"] if "accuracy" in x.components else -1 for x in r]
        for i, want in [(0, 1.0), (1, 0.0), (2, 1.0), (3, 0.0), (4, 0.0), (7, 1.0)]:
            check(acc[i] == want, "item %d accuracy %s, want %s (%s | %s)" %
                  (i, acc[i], want, r[i].extracted_answer, r[i].error))
        for i in (0, 1, 2, 3, 4):
            check(r[i].error == "" and r[i].components["format"] == 1.0,
                  "item %d scored with format 1: %r" % (i, r[i].error))
            check(r[i].total == acc[i] + 1.0, "item %d total %s" % (i, r[i].total))
        check("passed 2/2" in r[0].extracted_answer, "verdict 0: " + r[0].extracted_answer)
        check("wrong output" in r[1].extracted_answer, "verdict 1: " + r[1].extracted_answer)
        check("wrong output" in r[3].extracted_answer, "verdict 3: " + r[3].extracted_answer)
        check("PermissionError" in r[4].extracted_answer, "verdict 4: " + r[4].extracted_answer)
        check("not JSON" in r[5].error and r[5].total == 0, "item 5 error: " + r[5].error)
        check("unknown code language" in r[6].error, "item 6 error: " + r[6].error)
    check(svc.returncode == 0, "clean exit %s" % svc.returncode)
    print("code_reward_python: %s" % ("ok" if failures == 0 else "%d failures" % failures),
          file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
