#!/usr/bin/env bash
# Issue 7 GPU measurements in one call (docs/PERFORMANCE.md, section #7):
#   1. bench_dist all: NCCL all-reduce exactness + bandwidth, train 1 vs 2 ranks (tokens/s,
#      weights agreement), weight push of the Qwen2.5-0.5B shape by gRPC and by NCCL
#   2. a GRPO job on a small random Qwen2 model: 1 learner rank (cuda:0; SKIP_JOB1=1 skips it)
#      then 2 ranks (aha-job --rank 0 on cuda:0 with --weights-rendezvous, --rank 1 on cuda:1)
#      with the rollout worker on cuda:1 (NCCL takes one rank per GPU: the weights group is
#      {learner rank 0, worker}), reward on the CPU, refpolicy on cuda:0 only when BETA != 0;
#      per-step metrics of both (push_path names the push: nccl or grpc)
# Parts: BENCH_PARTS (default all), BENCH_TIMEOUT, JOB_TIMEOUT; OUT receives the logs.
# Dry run on a machine without GPUs: DRY=1 WT=tcp bash bench/run_dist_gpu.sh (CPU backend, tiny
# sizes). On the device tool it ran as .dev/dist/gpu_run.sh beside .dev/dist/bundle.tar.gz (the
# release build bundled with /work/shared/tools/device-bundle.sh; BIN= points elsewhere).
set -u
D=$(cd "$(dirname "$0")" && pwd)
if [ -f "$D/bundle.tar.gz" ] && [ ! -d "$D/bundle" ]; then tar -C "$D" -xzf "$D/bundle.tar.gz"; fi
BIN=${BIN:-$D/bundle/bin}
export LD_LIBRARY_PATH=$D/bundle/lib:${LD_LIBRARY_PATH:-}
OUT=${OUT:-/tmp/dist-out}
mkdir -p "$OUT"
W=$(mktemp -d /tmp/distgpu.XXXXXX)
if [ "${DRY:-0}" = 1 ]; then
  export BENCH_DIST_CPU=1; BENCH_ARGS="4 32 2 3 2"; DEV0=cpu; DEV1=cpu
  HID=64; LAY=2; INTER=128; HEADS=4; KV=2; Q=4; G=4; NEW=16; STEPS=3; MB=8
else
  BENCH_ARGS=""; DEV0=cuda:0; DEV1=cuda:1
  HID=896; LAY=12; INTER=4864; HEADS=14; KV=2; Q=8; G=8; NEW=96; STEPS=3; MB=32
fi
log() { echo "[$(date -u +%H:%M:%S)] $*" | tee -a "$OUT/summary.txt"; }
log "start on $(hostname); bundle $BIN"
{ nvidia-smi -L; nvidia-smi topo -m; } > "$OUT/gpus.txt" 2>&1 || true

# ---- 1. bench_dist ----
for part in ${BENCH_PARTS:-all}; do
  log "bench_dist $part $BENCH_ARGS"
  timeout ${BENCH_TIMEOUT:-300} "$BIN/bench_dist" $part $BENCH_ARGS >> "$OUT/bench_dist.txt" 2>&1
  log "bench_dist $part rc=$?"
done
grep -E "^(allreduce|broadcast|train|push)" "$OUT/bench_dist.txt" | grep -v " step " | tee -a "$OUT/summary.txt"

# ---- 2. GRPO job, 1 rank then 2 ranks ----
cat > "$W/config.json" <<CFG
{"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": $HID,
 "intermediate_size": $INTER, "num_hidden_layers": $LAY, "num_attention_heads": $HEADS,
 "num_key_value_heads": $KV, "max_position_embeddings": 2048, "rms_norm_eps": 1e-6,
 "rope_theta": 10000.0, "tie_word_embeddings": true, "vocab_size": 261,
 "eos_token_id": 256, "initializer_range": 0.02}
CFG
"$BIN/aha-tool" init-model --config "$W/config.json" --out "$W/model" --seed 3 > "$OUT/init.txt" 2>&1 &&
"$BIN/aha-tool" make-tokenizer --out "$W/model" --special '<|endoftext|>' --special '<think>' \
  --special '</think>' --special '<answer>' --special '</answer>' >> "$OUT/init.txt" 2>&1 || { log "model init failed"; cat "$OUT/init.txt"; }
for i in $(seq 0 63); do echo "{\"prompt\": \"What is $i + 7?\", \"answer\": \"$((i + 7))\"}"; done > "$W/train.jsonl"
cat > "$W/spec.json" <<SPEC
{"kind": "grpo", "model": "$W/model", "dataset": "$W/train.jsonl", "template": "r1-zero",
 "G": $G, "questions_per_step": $Q, "steps": $STEPS, "mu": 1, "micro_batch": $MB,
 "max_new_tokens": $NEW, "temperature": 1.0, "lr": 1e-5, "beta": ${BETA:-0},
 "reward_weights": {"accuracy": 1, "format": 1, "language": 1}, "language": "en",
 "checkpoint_every": 100, "seed": 9}
SPEC
start() { # name logfile args...
  local name=$1 logf=$2; shift 2
  "$@" > "$logf" 2>&1 &
  echo $! > "$W/$name.pid"
}
wait_listen() { # logfile
  for _ in $(seq 1 600); do grep -q "listening on" "$1" 2>/dev/null && return 0; sleep 0.1; done; return 1
}
start reward "$OUT/reward.log" "$BIN/aha-reward" --listen 127.0.0.1:51001
start rollout "$OUT/rollout.log" "$BIN/aha-rollout" --model "$W/model" --device $DEV1 --max-seq-len 1024 --listen 127.0.0.1:51002
# the rollout worker on the other GPU than learner rank 0: NCCL takes one rank per GPU in a
# communicator, and the weights group is {learner rank 0, worker}
SERVICES="reward rollout"
if [ "${BETA:-0}" != 0 ]; then
  start refpolicy "$OUT/refpolicy.log" "$BIN/aha-refpolicy" --model "$W/model" --device $DEV0 --listen 127.0.0.1:51003
  SERVICES="$SERVICES refpolicy"
fi
for s in $SERVICES; do wait_listen "$OUT/$s.log" || log "$s did not start"; done
SVC="--rollout 127.0.0.1:51002 --reward 127.0.0.1:51001 --refpolicy 127.0.0.1:51003 --rpc-timeout-ms 120000"
log "grpo 1 rank ($DEV0)"
[ "${SKIP_JOB1:-0}" = 1 ] || timeout ${JOB_TIMEOUT:-120} "$BIN/aha-job" "$W/spec.json" --job-dir "$W/job1" $SVC --device $DEV0 \
  > "$OUT/grpo1.jsonl" 2> "$OUT/grpo1.log"
log "grpo 1 rank rc=$?"
log "grpo 2 ranks ($DEV0 + $DEV1)"
timeout ${JOB_TIMEOUT:-120} "$BIN/aha-job" --rank 1 --world-size 2 --rendezvous 127.0.0.1:51010 --device $DEV1 \
  --dist-check-every 2 > "$OUT/grpo2.rank1.log" 2>&1 &
R1=$!
timeout ${JOB_TIMEOUT:-120} "$BIN/aha-job" "$W/spec.json" --job-dir "$W/job2" $SVC --device $DEV0 \
  --rank 0 --world-size 2 --rendezvous 127.0.0.1:51010 --dist-check-every 2 --dist-retries 0 \
  --weights-rendezvous 127.0.0.1:51020 ${WT:+--weights-transport $WT} \
  > "$OUT/grpo2.jsonl" 2> "$OUT/grpo2.log"
RC0=$?
wait $R1
log "grpo 2 ranks rc=$RC0 (rank 1 rc=$?)"
for k in 1 2; do
  python3 - "$OUT/grpo$k.jsonl" <<'PY' 2>/dev/null | tee -a "$OUT/summary.txt"
import json, sys
for line in open(sys.argv[1]):
    try: r = json.loads(line)
    except Exception: continue
    if r.get("type") != "step": continue
    t = r.get("seconds", {})
    print(f"{sys.argv[1].rsplit('/',1)[1]} step {r['step']}: loss {r.get('loss', 0):.6f} tokens {r.get('tokens')} "
          f"generate {t.get('generate', 0):.2f}s train {t.get('train', 0):.3f}s push {t.get('push', 0):.3f}s "
          f"total {t.get('total', 0):.2f}s reward {r.get('reward_mean', 0):.3f} grad_norm {r.get('grad_norm', 0):.4f} "
          f"push_path {r.get('push_path', '-')}")
PY
done
grep -hE "group|agree|weights push|error|ERROR" "$OUT/grpo2.log" "$OUT/grpo2.rank1.log" | cut -c1-300 | tail -8 | tee -a "$OUT/summary.txt"
for s in $SERVICES; do kill "$(cat "$W/$s.pid")" 2>/dev/null; done
sleep 1
rm -rf "$W"
log "done"
