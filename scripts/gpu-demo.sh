#!/usr/bin/env bash
# The demo's GRPO job scaled up, with all four services on one GPU (issue 11):
#
#   1. makes the CPU demo's arithmetic task (aha-gen-arith with scripts/demo.sh's flags), the
#      same byte-level tokenizer with the R1 tags and the R1-Zero template pieces as added
#      tokens, and a bigger random Qwen2 (examples/gpu-model/config.json: hidden 768, 12
#      layers, ~75M parameters; its vocabulary is set from the tokenizer);
#   2. starts aha-reward, aha-rollout, aha-refpolicy and aha-learner on loopback (ahactl up),
#      the last three with --device $AHA_DEVICE (default cuda:0): one GPU for everything;
#   3. SFTs the model on worked answers (examples/gpu-demo-sft.json), then runs GRPO from it
#      (examples/gpu-demo-grpo.json: 60 steps of 16 questions x G=16, held-out eval before,
#      in the middle and after);
#   4. prints per-phase seconds (generate / score / reference / train / push), generated
#      tokens/s and the train/inference logprob mismatch from the job's metrics.jsonl, and
#      the held-out accuracy from eval.jsonl; writes $D/summary.json.
#
# It builds nothing: the GPU machine has no gRPC or libuv to build with. Give it the folder
# of the executables, either a build directory (default build-cuda) or the bin/ of a bundle
# made with device-bundle.sh (then LD_LIBRARY_PATH must name the bundle's lib/):
#
#   scripts/gpu-demo.sh [BIN]
#
# Environment: AHA_DEVICE (cuda:0; "cpu" runs the same job on the CPU backend), AHA_GPU_DEMO_DIR
# (default gpu-demo), AHA_GPU_DEMO_PORT (first of five loopback ports, default 50260),
# AHA_GPU_DEMO_SFT_STEPS / AHA_GPU_DEMO_GRPO_STEPS (override the specs' steps),
# AHA_GPU_DEMO_SMALL=1 (a dry run at toy sizes: hidden 64, 2 layers, 4 questions x G=4,
# 16 new tokens: checks the whole script on a CPU in a few minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/topology.sh
T0=$(date +%s)
elapsed() { echo $(( $(date +%s) - T0 )); }

BIN=${1:-build-cuda}
DEV=${AHA_DEVICE:-cuda:0}
D=${AHA_GPU_DEMO_DIR:-gpu-demo}
P=${AHA_GPU_DEMO_PORT:-50260}
SMALL=${AHA_GPU_DEMO_SMALL:-0}

# an executable by name: BIN/NAME (a bundle) or its place in a build directory
exe() {
  local n=$1 p
  for p in "$BIN/$n" "$BIN/services/${n#aha-}/$n" "$BIN/cli/$n/$n" "$BIN/examples/$n"; do
    if [ -x "$p" ] && [ -f "$p" ]; then echo "$p"; return 0; fi
  done
  echo "gpu-demo: no executable $n under $BIN" >&2
  return 1
}
REWARD=$(exe aha-reward); ROLLOUT=$(exe aha-rollout); REFPOL=$(exe aha-refpolicy)
LEARNER=$(exe aha-learner); AHACTL_BIN=$(exe ahactl); TOOL=$(exe aha-tool); GEN=$(exe aha-gen-arith)
AHACTL=("$AHACTL_BIN" --server "127.0.0.1:$P")
echo "== gpu-demo: device $DEV, executables from $BIN, run dir $D$([ "$SMALL" = 1 ] && echo ', toy sizes (dry run)')"
if [ "$DEV" != cpu ] && command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | head -1
fi

# ---- task, tokenizer, model ---------------------------------------------------------------
rm -rf "$D"
mkdir -p "$D/models" "$D/jobs"
# the generator flags of scripts/demo.sh (the CPU demo's task), kept in step with it
"$GEN" --out "$D/data" --seed 1 --difficulty 2 --max-digits 1 --word-share 0 --sft 12000 --train 4000 \
  --eval 100 >/dev/null
TPL_HEAD='A conversation between User and Assistant. The user asks a question, and the Assistant solves it. The assistant first thinks about the reasoning process in the mind and then provides the user with the answer. The reasoning process and answer are enclosed within <think> </think> and <answer> </answer> tags, respectively, i.e., <think> reasoning process here </think> <answer> answer here </answer>. User:'
"$TOOL" make-tokenizer --out "$D/tok" --special '<|endoftext|>' \
  --special '<think>' --special '</think>' --special '<answer>' --special '</answer>' \
  --special "$TPL_HEAD" --special '. Assistant:' >/dev/null
# the model's vocabulary and end-of-text id come from the tokenizer just made
python3 - examples/gpu-model/config.json "$D/tok/tokenizer.json" "$D/config.json" "$SMALL" <<'PY'
import json, sys
cfg = json.load(open(sys.argv[1]))
tok = json.load(open(sys.argv[2]))
ids = [t["id"] for t in tok.get("added_tokens", [])] + list(tok["model"]["vocab"].values())
eos = [t["id"] for t in tok["added_tokens"] if t["content"] == "<|endoftext|>"][0]
cfg["vocab_size"] = max(ids) + 1
cfg["eos_token_id"] = cfg["pad_token_id"] = eos
if sys.argv[4] == "1":
    cfg.update(hidden_size=64, intermediate_size=176, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2)
json.dump(cfg, open(sys.argv[3], "w"), indent=2)
PY
"$TOOL" init-model --config "$D/config.json" --out "$D/models/base" --seed 1 >/dev/null
cp "$D/tok/tokenizer.json" "$D/models/base/"
[ -f "$D/tok/tokenizer_config.json" ] && cp "$D/tok/tokenizer_config.json" "$D/models/base/"
python3 - "$D/config.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
h, L, I, V = c["hidden_size"], c["num_hidden_layers"], c["intermediate_size"], c["vocab_size"]
kv = c["num_key_value_heads"] * h // c["num_attention_heads"]
n = V * h + L * (2 * h * h + 2 * h * kv + h + 2 * kv + 3 * h * I + 2 * h) + h
print("== model: hidden %d, %d layers, %d heads (%d kv), intermediate %d, vocabulary %d: %.1fM parameters"
      % (h, L, c["num_attention_heads"], c["num_key_value_heads"], I, V, n / 1e6))
PY
echo "== task: $(wc -l <"$D/data/sft.jsonl") worked examples (SFT), $(wc -l <"$D/data/train.jsonl") RL questions, $(wc -l <"$D/data/eval.jsonl") held out"

# ---- job specs: the examples with this run's paths (and toy sizes for a dry run) ----------
python3 - "$D" "$SMALL" "${AHA_GPU_DEMO_SFT_STEPS:-}" "${AHA_GPU_DEMO_GRPO_STEPS:-}" <<'PY'
import json, sys
d, small, sft_steps, grpo_steps = sys.argv[1], sys.argv[2] == "1", sys.argv[3], sys.argv[4]
sft = json.load(open("examples/gpu-demo-sft.json"))
sft["model"] = d + "/models/base"
sft["dataset"]["path"] = d + "/data/sft.jsonl"
grpo = json.load(open("examples/gpu-demo-grpo.json"))
grpo["dataset"] = d + "/data/train.jsonl"
grpo["eval"]["dataset"] = d + "/data/eval.jsonl"
if small:
    sft.update(steps=20, batch_size=16, micro_batch=16, checkpoint_every=20)
    grpo.update(steps=4, G=4, questions_per_step=4, micro_batch=16, max_new_tokens=16, checkpoint_every=4)
    grpo["eval"].update(every=2, k=2, max_new_tokens=16)
if sft_steps: sft["steps"] = sft["checkpoint_every"] = int(sft_steps)
if grpo_steps:
    grpo["steps"] = grpo["checkpoint_every"] = int(grpo_steps)
    grpo["eval"]["every"] = max(1, int(grpo_steps) // 2)
json.dump(sft, open(d + "/sft.json", "w"), indent=2)
json.dump(grpo, open(d + "/grpo.json", "w"), indent=2)
PY
SLOTS=$(python3 -c 'import json,sys; g=json.load(open(sys.argv[1])); print(g["questions_per_step"]*g["G"])' "$D/grpo.json")

# ---- services: all on one device ----------------------------------------------------------
write_topology "$D/topology.json" about="written by scripts/gpu-demo.sh: every service on $DEV" port="$P" \
  device="$DEV" model="$D/models/base" jobs="$D/jobs" reward="$REWARD" rollout="$ROLLOUT" refpolicy="$REFPOL" \
  learner="$LEARNER" max_batch="$SLOTS" max_seq_len=320 restart=false log=info
"${AHACTL[@]}" up "$D/topology.json" --detach --run-dir "$D/run" --start-timeout-s 120
trap '"${AHACTL[@]}" down --run-dir "$D/run" >/dev/null 2>&1 || true' EXIT
trap 'exit 143' INT TERM # a killed run (timeout) still stops the services
echo "   services up after $(elapsed)s"

# ---- 1. SFT ---------------------------------------------------------------------------------
T1=$(date +%s)
SFT=$("${AHACTL[@]}" submit "$D/sft.json")
echo "== SFT ($D/sft.json): job $SFT"
"${AHACTL[@]}" watch "$SFT" >"$D/sft-watch.log" 2>&1 || { tail -20 "$D/sft-watch.log"; echo "gpu-demo: SFT failed"; exit 1; }
tail -2 "$D/sft-watch.log"
T_SFT=$(( $(date +%s) - T1 ))
BASE="$D/jobs/$SFT/$(cat "$D/jobs/$SFT/latest")"
echo "   SFT took ${T_SFT}s; checkpoint $BASE"

# ---- 2. GRPO from the SFT checkpoint --------------------------------------------------------
python3 - "$BASE" "$D/grpo.json" <<'PY'
import json, sys
spec = json.load(open(sys.argv[2]))
spec["model"] = sys.argv[1]
json.dump(spec, open(sys.argv[2], "w"), indent=2)
PY
T2=$(date +%s)
RL=$("${AHACTL[@]}" submit "$D/grpo.json")
echo "== GRPO ($D/grpo.json) from the SFT checkpoint: job $RL"
"${AHACTL[@]}" watch "$RL" >"$D/grpo-watch.log" 2>&1 || { tail -20 "$D/grpo-watch.log"; echo "gpu-demo: GRPO failed"; exit 1; }
tail -3 "$D/grpo-watch.log"
T_RL=$(( $(date +%s) - T2 ))

# ---- 3. what the job measured ----------------------------------------------------------------
python3 - "$D/jobs/$RL" "$DEV" "$T_SFT" "$T_RL" "$(elapsed)" "$D/summary.json" <<'PY'
import json, statistics as S, sys
job, dev, t_sft, t_rl, secs, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
st = [r for r in map(json.loads, open(job + "/metrics.jsonl")) if r.get("type") == "step"]
ev = [json.loads(l) for l in open(job + "/eval.jsonl")]
phases = ["generate", "score", "reference", "train", "push", "eval", "total"]
def col(k): return [r["seconds"][k] for r in st if k in r.get("seconds", {})]
# the first step also warms up (graph recordings, allocations): report it apart
steady = st[1:] if len(st) > 2 else st
def col_s(k): return [r["seconds"][k] for r in steady if k in r.get("seconds", {})]
summ = {"device": dev, "steps": len(st), "sft_seconds": t_sft, "grpo_seconds": t_rl, "script_seconds": secs,
        "phase_seconds_median": {}, "phase_seconds_first_step": {}}
print("== GRPO on %s: %d steps, %d completions per step, %.0f generated tokens per step (mean)"
      % (dev, len(st), st[-1].get("n_completions", 0), S.mean(r.get("tokens", 0) for r in st)))
print("   %-10s %10s %10s %10s" % ("phase", "step 1 s", "median s", "share"))
tot_med = S.median(col_s("total")) if col_s("total") else 0
for k in phases:
    v, v1 = col_s(k), col(k)
    if not v: continue
    med = S.median(v)
    summ["phase_seconds_median"][k] = med
    summ["phase_seconds_first_step"][k] = v1[0]
    print("   %-10s %10.3f %10.3f %9.0f%%" % (k, v1[0], med, 100 * med / tot_med if tot_med else 0))
gen_tps = [r["tokens"] / r["seconds"]["generate"] for r in steady if r.get("tokens") and r["seconds"].get("generate")]
step_tps = [r["tokens_per_s"] for r in steady if "tokens_per_s" in r]
mm = [r["logprob_mismatch"] for r in st if "logprob_mismatch" in r]
summ.update(generate_tokens_per_s_median=S.median(gen_tps) if gen_tps else None,
            step_tokens_per_s_median=S.median(step_tps) if step_tps else None,
            logprob_mismatch={"mean": S.mean(mm), "max": max(mm), "last": mm[-1]} if mm else None)
if gen_tps: print("   generated tokens/s while generating (median): %.0f" % S.median(gen_tps))
if step_tps: print("   generated tokens/s over whole steps (median): %.0f" % S.median(step_tps))
if mm: print("   train/inference logprob mismatch (mean |rollout - learner| per token): mean %.4f, max %.4f, last %.4f"
             % (S.mean(mm), max(mm), mm[-1]))
a, b = st[0], st[-1]
print("   reward %.3f -> %.3f, accuracy %.3f -> %.3f, format %.3f -> %.3f, length %.1f -> %.1f (first -> last step)"
      % (a.get("reward_mean", 0), b.get("reward_mean", 0), a.get("accuracy", 0), b.get("accuracy", 0),
         a.get("format_rate", 0), b.get("format_rate", 0), a.get("length_mean", 0), b.get("length_mean", 0)))
if ev:
    e0, e1 = ev[0], ev[-1]
    print("== held-out accuracy, %d questions, pass@1 over %d samples (temperature %.1f):"
          % (e0["n_questions"], e0["k"], e0["temperature"]))
    for e in ev:
        print("   step %3d: pass@1 %5.1f%%   cons@%d %5.1f%%   format %5.1f%%"
              % (e["step"], 100 * e["pass_at_1"], e["k"], 100 * e["cons_at_k"], 100 * e["format_rate"]))
    summ["eval"] = [{k: e.get(k) for k in ("step", "pass_at_1", "cons_at_k", "format_rate")} for e in ev]
json.dump(summ, open(out, "w"), indent=2)
print("== SFT %ds, GRPO %ds, whole script %dm%02ds; summary in %s" % (t_sft, t_rl, secs // 60, secs % 60, out))
PY
