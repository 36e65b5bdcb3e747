#!/usr/bin/env python3
"""gen.py writes YAML with its own small emitter (standard library only). Every value must read
back as exactly what was written, under python3-yaml's YAML 1.1 rules, which are stricter
than YAML 1.2 (yes/no/on/off are booleans, 1:30 is base 60): tricky scalars first, then
seeded random documents."""
import os
import random
import sys

import yaml

sys.path.insert(0, os.path.join(os.environ["AHA_SOURCE_ROOT"], "deploy"))
import gen  # noqa: E402

TRICKY = ["", "0", "1", "-1", "0.1.0", "1e3", "0x1f", "0o17", "017", ".5", "-.5", "+1", "1_000",
          "true", "false", "yes", "no", "on", "off", "y", "n", "Y", "NO", "null", "~", "Null",
          ".inf", "-.inf", ".nan", "50050:50050", "1:30", "127.0.0.1:50050", "a: b", "a #b", "#x",
          "- x", "-", "--listen", "? x", "[x]", "{x}", "*x", "&x", "!x", "|x", ">x", "%x", "@x", "`x",
          "'x'", '"x"', "x\ny", " lead", "trail ", "tab\tx", "${AHA_MODEL:-/models/policy}",
          "$(AHA_RANK)", "metadata.labels['apps.kubernetes.io/pod-index']", "nvidia.com/gpu",
          "500m", "1Gi", "10s", "2024-01-01", "12:30:00", "é", "\u2028", "../../base", ".aha/jobs",
          "=", "<<", "a,b", "x: ", "true ", "0.0.0.0", "1.", "-x-"]
failures = 0
for s in TRICKY:
    for doc in ({"k": s}, [s], {s if s else "empty": 1} if s.strip() == s and "\n" not in s else {"k": [s]}):
        back = yaml.safe_load(gen.yaml_doc(doc))
        if back != doc:
            failures += 1
            print("FAIL: %r wrote %r, read back %r" % (doc, gen.yaml_doc(doc), back))

rng = random.Random(20261128)
alphabet = "abz09:-./ _#$'\"{}[],&*!|>%@`?~\n\té"


def value(depth):
    r = rng.random()
    if depth > 3 or r < 0.4:
        kind = rng.randrange(5)
        if kind == 0:
            return rng.randrange(-1000, 100000)
        if kind == 1:
            return rng.random() < 0.5
        if kind == 2:
            return rng.choice(TRICKY)
        return "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 12)))
    if r < 0.7:
        return [value(depth + 1) for _ in range(rng.randrange(0, 4))]
    return {"k%d%s" % (i, rng.choice(["", "-x", ".y", "/z"])): value(depth + 1) for i in range(rng.randrange(0, 4))}


for i in range(2000):
    doc = {"root": value(0)}
    back = yaml.safe_load(gen.yaml_doc(doc))
    if back != doc:
        failures += 1
        if failures < 10:
            print("FAIL: random document %d: %r -> %r" % (i, doc, back))
print("%d tricky scalars, 2000 random documents, %d failures" % (len(TRICKY), failures))
sys.exit(1 if failures else 0)
