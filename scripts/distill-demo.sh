#!/usr/bin/env bash
# Distillation vs RL at toy scale: the shape of DeepSeek-R1's Table 6 on a CPU.
#
# The task and the SFT corpus are the demo's (scripts/demo.sh): one-digit sums of 2-3 terms, and
# a "think or guess" corpus where 60 % of the answers skip the steps and guess. The same small
# student (examples/models/distill-student.json, ~0.1M parameters) is trained
#   (a) by GRPO alone, from its own weak SFT base, and
#   (b) by distillation: SFT of that same base on samples of a larger GRPO-trained teacher
#       (examples/models/distill-teacher.json, ~0.8M parameters), rejection-sampled (correct
#       and well-formatted only),
# and the teacher, the student base, (a) and (b) are evaluated on held-out arithmetic problems:
# pass@1 over 8 samples (temperature 0.6, top-p 0.95) and cons@8.
#
# Everything is one pipeline job, examples/distill.json, submitted to aha-learner; the teacher
# and the student have different shapes, so each gets its own rollout worker and reference
# policy (a rollout worker serves one architecture), named in the stages' "services".
#
#   1. installs what is missing (Debian 12) and builds (release, CPU only);
#   2. generates the task (aha-gen-arith), a byte-level tokenizer whose added tokens are the
#      R1 tags and the two fixed pieces of the R1-Zero template (as scripts/demo.sh does), and
#      the two random models;
#   3. starts aha-reward, two aha-rollout, two aha-refpolicy and aha-learner on loopback;
#   4. submits the pipeline, watches it, and prints `ahactl report` (the eval table).
#
# Environment: AHA_BUILD (build dir, default build-release), AHA_DISTILL_DIR (default
# demo-distill), AHA_DISTILL_PORT (learner port, default 50180; the others follow it: the
# ports in examples/distill.json are rewritten accordingly).
set -euo pipefail
cd "$(dirname "$0")/.."
T0=$(date +%s)
elapsed() { echo $(( $(date +%s) - T0 )); }

bash scripts/install-deps.sh
B=${AHA_BUILD:-build-release}
D=${AHA_DISTILL_DIR:-demo-distill}
P=${AHA_DISTILL_PORT:-50180}
if [ ! -f "$B/build.ninja" ]; then
  meson setup "$B" --buildtype=release -Dcuda=disabled -Dnccl=disabled -Dfuzz=disabled >/dev/null
fi
echo "== building ($B)"
ninja -C "$B" services/reward/aha-reward services/rollout/aha-rollout \
  services/refpolicy/aha-refpolicy services/learner/aha-learner cli/ahactl/ahactl \
  cli/aha-tool/aha-tool examples/aha-gen-arith >/dev/null
echo "   built in $(elapsed)s"
AHACTL=("$B/cli/ahactl/ahactl" --server "127.0.0.1:$P")
T1=$(date +%s)

# ---- task, tokenizer, models ------------------------------------------------------------------
rm -rf "$D"
mkdir -p "$D/models" "$D/jobs"
"$B/examples/aha-gen-arith" --out "$D/data" --seed 1 --difficulty 2 --max-digits 1 --word-share 0 \
  --sft 12000 --guess-share 0.6 --guess-spread 5 --train 4000 --eval 200 >/dev/null
TPL_HEAD='A conversation between User and Assistant. The user asks a question, and the Assistant solves it. The assistant first thinks about the reasoning process in the mind and then provides the user with the answer. The reasoning process and answer are enclosed within <think> </think> and <answer> </answer> tags, respectively, i.e., <think> reasoning process here </think> <answer> answer here </answer>. User:'
for m in teacher student; do
  "$B/cli/aha-tool/aha-tool" init-model --config "examples/models/distill-$m.json" \
    --out "$D/models/$m-init" --seed 1
  "$B/cli/aha-tool/aha-tool" make-tokenizer --out "$D/models/$m-init" --special '<|endoftext|>' \
    --special '<think>' --special '</think>' --special '<answer>' --special '</answer>' \
    --special "$TPL_HEAD" --special '. Assistant:' >/dev/null
done

# ---- services ----------------------------------------------------------------------------------
svc() { # name binary port args...
  local name=$1 bin=$2 port=$3; shift 3
  local args=""
  for a in --listen "127.0.0.1:$port" "$@" --log-level warn; do args="$args\"$a\", "; done
  printf '    {"name": "%s", "binary": "%s", "args": [%s], "port": %s, "restart": true, "health": "127.0.0.1:%s"}' \
    "$name" "$bin" "${args%, }" "$port" "$port"
}
{
  echo '{"format": "aha.topology/v1", "about": "written by scripts/distill-demo.sh", "services": ['
  svc reward "$B/services/reward/aha-reward" $((P + 1)); echo ","
  svc rollout-teacher "$B/services/rollout/aha-rollout" $((P + 2)) --model "$D/models/teacher-init" \
    --device cpu --max-batch 64 --max-seq-len 256; echo ","
  svc refpolicy-teacher "$B/services/refpolicy/aha-refpolicy" $((P + 3)) --model "$D/models/teacher-init" \
    --device cpu; echo ","
  svc rollout-student "$B/services/rollout/aha-rollout" $((P + 4)) --model "$D/models/student-init" \
    --device cpu --max-batch 64 --max-seq-len 256; echo ","
  svc refpolicy-student "$B/services/refpolicy/aha-refpolicy" $((P + 5)) --model "$D/models/student-init" \
    --device cpu; echo ","
  svc learner "$B/services/learner/aha-learner" "$P" --jobs-dir "$D/jobs" --device cpu \
    --reward "127.0.0.1:$((P + 1))"; echo
  echo ']}'
} >"$D/topology.json"
"${AHACTL[@]}" up "$D/topology.json" --detach --run-dir "$D/run"
trap '"${AHACTL[@]}" down --run-dir "$D/run" >/dev/null 2>&1 || true' EXIT

# ---- the pipeline ------------------------------------------------------------------------------
python3 - "$D" "$P" "$D/distill.json" <<'PY'
import json, sys
d, p, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
text = open("examples/distill.json").read().replace('"demo/', '"%s/' % d)
for off in range(1, 6):
    text = text.replace("127.0.0.1:%d" % (50180 + off), "127.0.0.1:%d" % (p + off))
json.loads(text)
open(out, "w").write(text)
PY
echo "== pipeline (examples/distill.json): teacher SFT+GRPO, student SFT base, (a) GRPO, (b) distillation"
JOB=$("${AHACTL[@]}" submit "$D/distill.json")
"${AHACTL[@]}" watch "$JOB" | grep -v '^\[log\]' || true
"${AHACTL[@]}" status "$JOB" | tail -n 12
"${AHACTL[@]}" report "$JOB" | tee "$D/report.md"
secs=$(( $(date +%s) - T1 ))
echo "== pipeline + setup: $((secs / 60))m$(printf %02d $((secs % 60)))s (load average: $(cut -d' ' -f1-3 /proc/loadavg))"
