# interop_transformers.py IN OUT: run where torch + transformers are (the device machine).
#
# 1. Loads every checkpoint interop_write produced in IN (config.json + generation_config.json
#    from aha_config_save, weights from aha's safetensors writer, f32 single file and bf16
#    sharded with an index) with transformers' Auto classes, and checks: no missing,
#    unexpected or mismatched weights; config fields equal to the fixture's; f32 weights equal
#    to the fixture's; bf16 weights bit-identical to torch's own f32 -> bf16 rounding; the
#    logits of the f32 reload equal those of the fixture model.
# 2. Writes transformers' own saves of the tiny-qwen3 fixture into OUT (bf16 sharded, f16
#    single) for aha's reader tests (tests/unit/io/data/).
# Prints one line per check and "interop: N checks, M failed"; exits 1 on any failure.
import json, os, sys
import torch
from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig

inp, out = sys.argv[1], sys.argv[2]
fixtures = os.environ.get("AHA_FIXTURES") or os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "fixtures")
checks = fails = 0


def check(cond, what):
    global checks, fails
    checks += 1
    if not cond:
        fails += 1
    print(("ok     " if cond else "NOT OK ") + what, flush=True)


for name in ["tiny-qwen2", "tiny-llama", "tiny-qwen3"]:
    ref_dir = os.path.join(fixtures, name)
    ref = AutoModelForCausalLM.from_pretrained(ref_dir, dtype=torch.float32).eval()
    ref_cfg = AutoConfig.from_pretrained(ref_dir)
    for kind in ["f32", "bf16"]:
        d = os.path.join(inp, f"{name}-{kind}")
        cfg = AutoConfig.from_pretrained(d)
        for k in ["model_type", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                  "num_attention_heads", "num_key_value_heads", "head_dim", "max_position_embeddings",
                  "rms_norm_eps", "tie_word_embeddings", "bos_token_id", "eos_token_id", "attention_bias",
                  "mlp_bias"]:
            if hasattr(ref_cfg, k):
                check(getattr(cfg, k, None) == getattr(ref_cfg, k), f"{d}: config {k} = {getattr(cfg, k, None)!r}")
        check(cfg.rope_parameters["rope_theta"] == ref_cfg.rope_parameters["rope_theta"]
              and cfg.rope_parameters["rope_type"] == "default", f"{d}: rope_parameters {cfg.rope_parameters}")
        check(str(cfg.dtype).endswith("bfloat16" if kind == "bf16" else "float32"), f"{d}: dtype {cfg.dtype}")
        gen = GenerationConfig.from_pretrained(d)
        check(gen.eos_token_id == ref_cfg.eos_token_id and gen.bos_token_id == ref_cfg.bos_token_id,
              f"{d}: generation_config eos {gen.eos_token_id} bos {gen.bos_token_id}")
        dt = torch.bfloat16 if kind == "bf16" else torch.float32
        m, info = AutoModelForCausalLM.from_pretrained(d, dtype=dt, output_loading_info=True)
        check(not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"],
              f"{d}: loading info {info}")
        ref_sd, sd = ref.state_dict(), m.state_dict()
        check(set(ref_sd) == set(sd), f"{d}: same parameter names ({len(sd)})")
        bad = []
        for k, v in ref_sd.items():
            want = v.to(dt)
            got = sd[k]
            if kind == "bf16":
                same = torch.equal(want.view(torch.int16), got.view(torch.int16))
            else:
                same = torch.equal(want, got)
            if not same:
                bad.append(k)
        check(not bad, f"{d}: weights {'bit-identical to torch' if kind == 'bf16' else 'equal'} "
                       f"({len(ref_sd)} tensors, differing: {bad[:3]})")
        if kind == "f32":
            ids = torch.randint(0, cfg.vocab_size, (2, 12), generator=torch.Generator().manual_seed(5))
            with torch.no_grad():
                a, b = ref(input_ids=ids).logits, m.eval()(input_ids=ids).logits
            check(torch.equal(a, b), f"{d}: logits equal to the fixture model's (max |d| {float((a - b).abs().max())})")

# transformers' own saves, for aha's reader tests
q3 = AutoModelForCausalLM.from_pretrained(os.path.join(fixtures, "tiny-qwen3"), dtype=torch.float32)
q3.to(torch.bfloat16).save_pretrained(os.path.join(out, "hf-qwen3-bf16-sharded"), max_shard_size="100KB")
q3f = AutoModelForCausalLM.from_pretrained(os.path.join(fixtures, "tiny-qwen3"), dtype=torch.float32)
q3f.to(torch.float16).save_pretrained(os.path.join(out, "hf-qwen3-f16"))
for sub in ["hf-qwen3-bf16-sharded", "hf-qwen3-f16"]:
    print(sub, sorted(os.listdir(os.path.join(out, sub))))
print(f"interop: {checks} checks, {fails} failed")
sys.exit(1 if fails else 0)
