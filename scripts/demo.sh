#!/usr/bin/env bash
# The README's main command: R1-Zero in miniature on a laptop CPU, in about 5 minutes.
#
#   1. installs what is missing (Debian 12) and builds the services (release, CPU only);
#   2. makes the task and the model: seeded arithmetic problems (aha-gen-arith), a byte-level
#      tokenizer, a tiny random Qwen2 (examples/demo-model/config.json);
#   3. starts aha-reward, aha-rollout, aha-refpolicy and aha-learner on loopback (ahactl up);
#   4. SFTs the model on a "think or guess" corpus (examples/demo-sft.json): 40 % of the
#      answers work the steps inside <think>, 60 % skip them and guess a number near the
#      answer. The base answers both ways and is right mostly when it works the steps: a
#      WEAK base that knows the format;
#   5. runs GRPO with accuracy + format rewards on the R1-Zero template, from that base
#      (examples/demo-grpo.json), showing the live table (ahactl watch): RL has to find out
#      that thinking pays, so accuracy and response length rise together (R1-Zero's Fig. 3);
#   6. prints held-out accuracy (pass@1 over 4 samples, temperature 0.6, top-p 0.95) before
#      and after RL, and writes the plot (ahactl plot).
#
# The tokenizer holds the bytes, the R1 tags, and the two fixed pieces of the R1-Zero
# template ("A conversation between User and Assistant. ... User:" and ". Assistant:") as
# added tokens: the model reads Table 1 verbatim, in 2 tokens instead of ~430, so the two
# CPU cores spend their time on the questions and answers.
#
# Environment: AHA_BUILD (build dir, default build-release), AHA_DEMO_DIR (default demo),
# AHA_DEMO_PORT (first of four loopback ports, default 50160), AHA_DEMO_SEED (seed of the
# data, the initial weights, SFT and GRPO; default 1).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/topology.sh
T0=$(date +%s)
elapsed() { echo $(( $(date +%s) - T0 )); }

bash scripts/install-deps.sh
B=${AHA_BUILD:-build-release}
D=${AHA_DEMO_DIR:-demo}
P=${AHA_DEMO_PORT:-50160}
S=${AHA_DEMO_SEED:-1}
if [ ! -f "$B/build.ninja" ]; then
  meson setup "$B" --buildtype=release -Dcuda=disabled -Dnccl=disabled -Dfuzz=disabled >/dev/null
fi
echo "== building ($B)"
ninja -C "$B" services/reward/aha-reward services/rollout/aha-rollout \
  services/refpolicy/aha-refpolicy services/learner/aha-learner cli/ahactl/ahactl \
  cli/aha-tool/aha-tool examples/aha-gen-arith >/dev/null
echo "   built in $(elapsed)s"
AHACTL=("$B/cli/ahactl/ahactl" --server "127.0.0.1:$P")

# ---- task, tokenizer, model ---------------------------------------------------------------
rm -rf "$D"
mkdir -p "$D/models" "$D/jobs"
"$B/examples/aha-gen-arith" --out "$D/data" --seed "$S" --difficulty 2 --max-digits 1 --word-share 0 \
  --sft 12000 --guess-share 0.6 --guess-spread 5 --train 4000 --eval 200 >/dev/null
"$B/cli/aha-tool/aha-tool" init-model --config examples/demo-model/config.json --out "$D/models/base" \
  --seed "$S" >/dev/null
TPL_HEAD='A conversation between User and Assistant. The user asks a question, and the Assistant solves it. The assistant first thinks about the reasoning process in the mind and then provides the user with the answer. The reasoning process and answer are enclosed within <think> </think> and <answer> </answer> tags, respectively, i.e., <think> reasoning process here </think> <answer> answer here </answer>. User:'
"$B/cli/aha-tool/aha-tool" make-tokenizer --out "$D/models/base" --special '<|endoftext|>' \
  --special '<think>' --special '</think>' --special '<answer>' --special '</answer>' \
  --special "$TPL_HEAD" --special '. Assistant:' >/dev/null
echo "== task: $(wc -l <"$D/data/sft.jsonl") SFT answers ($(grep -c '<think> </think>' "$D/data/sft.jsonl") of them guesses), $(wc -l <"$D/data/train.jsonl") RL questions, $(wc -l <"$D/data/eval.jsonl") held out"
grep -m 1 -v '<think> </think>' "$D/data/sft.jsonl" || true
grep -m 1 '<think> </think>' "$D/data/sft.jsonl" || true

# the example specs name demo/...; point them at $D and give them the seed
spec() { # example out [model]
  python3 - "$1" "$2" "$D" "$S" "${3:-}" <<'PY'
import json, sys
src, out, d, seed, model = sys.argv[1:6]
spec = json.loads(open(src).read().replace('"demo/', '"%s/' % d))
spec["seed"] = spec.get("seed", 0) + int(seed) - 1  # AHA_DEMO_SEED=1 runs the spec as written
if model:
    spec["model"] = model
json.dump(spec, open(out, "w"), indent=2)
PY
}

# ---- services -----------------------------------------------------------------------------
write_topology "$D/topology.json" about="written by scripts/demo.sh" port="$P" device=cpu \
  model="$D/models/base" jobs="$D/jobs" reward="$B/services/reward/aha-reward" \
  rollout="$B/services/rollout/aha-rollout" refpolicy="$B/services/refpolicy/aha-refpolicy" \
  learner="$B/services/learner/aha-learner" max_batch=64 max_seq_len=256 restart=true log=warn
"${AHACTL[@]}" up "$D/topology.json" --detach --run-dir "$D/run"
trap '"${AHACTL[@]}" down --run-dir "$D/run" >/dev/null 2>&1 || true' EXIT

# ---- 1. SFT to a weak base --------------------------------------------------------------
echo "== SFT (examples/demo-sft.json): worked answers and guesses"
spec examples/demo-sft.json "$D/sft.json"
SFT=$("${AHACTL[@]}" submit "$D/sft.json")
"${AHACTL[@]}" watch "$SFT" --every 100
BASE="$D/jobs/$SFT/$(cat "$D/jobs/$SFT/latest")"

# ---- 2. GRPO from the base ----------------------------------------------------------------
spec examples/demo-grpo.json "$D/grpo.json" "$BASE"
echo "== GRPO (examples/demo-grpo.json) from $BASE: accuracy + format rewards, R1-Zero template"
RL=$("${AHACTL[@]}" submit "$D/grpo.json")
"${AHACTL[@]}" watch "$RL"

# ---- 3. results ---------------------------------------------------------------------------
"${AHACTL[@]}" plot "$RL" -o "$D/plot.svg" >/dev/null
python3 - "$D/jobs/$RL" "$(elapsed)" <<'PY'
import json, sys
job, secs = sys.argv[1], int(sys.argv[2])
ev = [json.loads(l) for l in open(job + "/eval.jsonl")]
st = [json.loads(l) for l in open(job + "/metrics.jsonl")]
a, b = ev[0], ev[-1]
print("== held-out accuracy, %d questions, pass@1 over %d samples (temperature %.1f, top-p %.2f):"
      % (a["n_questions"], a["k"], a["temperature"], a["top_p"]))
for name, e in (("SFT base", a), ("after RL", b)):
    print("   %s (step %3d): %5.1f%%   cons@%d %5.1f%%   format %5.1f%%   length %4.1f tokens"
          % (name, e["step"], 100 * e["pass_at_1"], e["k"], 100 * e["cons_at_k"], 100 * e["format_rate"],
             e["length_mean"]))
print("   RL gain: %+.1f points" % (100 * (b["pass_at_1"] - a["pass_at_1"])))
last = st[-5:]
fmt = sum(r["format_rate"] for r in last) / len(last)
print("   training format reward over the last %d steps: %.3f" % (len(last), fmt))
print("== total time %dm%02ds" % (secs // 60, secs % 60))
PY
echo "== plot: $D/plot.svg (reward, accuracy and response length against step)"
