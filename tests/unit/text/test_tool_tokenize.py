#!/usr/bin/env python3
"""test_tool_tokenize: runs `aha-tool tokenize` (argv[1]) on the Hugging Face reference cases
and checks ids and decoded text line by line; bad arguments and input exit with status 2."""
import json
import os
import subprocess
import sys

tool = sys.argv[1]
fix = os.environ.get("AHA_FIXTURES", "tests/fixtures")
tok = os.path.join(fix, "tokenizer", "qwen3")
cases = [json.loads(l) for l in open(os.path.join(fix, "tokenizer", "tok_cases.expected.jsonl"), encoding="utf-8")]
failures = 0


def check(cond, msg):
    global failures
    if not cond:
        failures += 1
        print("not ok:", msg, file=sys.stderr)


stdin = "".join(json.dumps({"text": c["text"]}) + "\n" for c in cases) + "\n"
r = subprocess.run([tool, "tokenize", "--tokenizer", tok], input=stdin.encode(), capture_output=True)
check(r.returncode == 0, f"exit {r.returncode}: {r.stderr.decode()}")
out = [json.loads(l) for l in r.stdout.decode("utf-8").split("\n") if l]
check(len(out) == len(cases), f"{len(out)} output lines for {len(cases)} cases")
for i, (c, o) in enumerate(zip(cases, out)):
    if o["ids"] != c["ids"]:
        k = next((j for j, (a, b) in enumerate(zip(o["ids"], c["ids"])) if a != b), min(len(o["ids"]), len(c["ids"])))
        check(False, f"case {i}: ids differ at index {k}")
    check(o["decoded"] == c["decoded"], f"case {i}: decoded text differs")

# --template r1-zero: the same as tokenizing Table 1 of the R1 paper with the question in it
TABLE1 = ("A conversation between User and Assistant. The user asks a question, and the Assistant "
          "solves it. The assistant first thinks about the reasoning process in the mind and then "
          "provides the user with the answer. The reasoning process and answer are enclosed within "
          "<think> </think> and <answer> </answer> tags, respectively, i.e., <think> reasoning "
          "process here </think> <answer> answer here </answer>. User: {}. Assistant:")
qs = [c["text"] for c in cases[:6]]
stdin = "".join(json.dumps({"text": q}) + "\n" for q in qs)
r1 = subprocess.run([tool, "tokenize", "--tokenizer", tok, "--template", "r1-zero-think"], input=stdin.encode(), capture_output=True)
stdin2 = "".join(json.dumps({"text": TABLE1.format(q) + " <think>"}) + "\n" for q in qs)
r2 = subprocess.run([tool, "tokenize", "--tokenizer", tok], input=stdin2.encode(), capture_output=True)
check(r1.returncode == 0 and r2.returncode == 0, f"template runs: {r1.stderr.decode()} {r2.stderr.decode()}")
check(r1.stdout == r2.stdout and len(r1.stdout) > 0, "--template r1-zero-think equals tokenizing the rendered Table 1")

for args, stdin, what in [
    (["tokenize", "--tokenizer", tok, "--template", "no-such-template"], "", "unknown template"),
    (["tokenize"], "", "missing --tokenizer"),
    (["tokenize", "--tokenizer", "/nonexistent/tok"], "", "missing file"),
    (["tokenize", "--tokenizer", tok, "--bogus"], "", "unknown flag"),
    (["tokenize", "--tokenizer", tok], '{"text": 5}\n', "text not a string"),
    (["tokenize", "--tokenizer", tok], "not json\n", "not JSON"),
]:
    r = subprocess.run([tool] + args, input=stdin.encode(), capture_output=True)
    err = r.stderr.decode().strip()
    check(r.returncode == 2, f"{what}: exit {r.returncode}, want 2")
    check(err.count("\n") == 0 and err.startswith("aha-tool tokenize:"), f"{what}: one-line error, got {err!r}")

print(f"test_tool_tokenize: {len(cases)} cases, {failures} failures", file=sys.stderr)
sys.exit(1 if failures else 0)
