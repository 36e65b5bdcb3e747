# Device-side check (needs torch + transformers, so not in the meson suites): models written by
# `aha-tool init-model` load in transformers with no missing, unexpected or mismatched tensors,
# and transformers' fp32 logits equal the logits `aha-tool logprobs --logits` computed here.
# Prepare DIR on this machine, for each fixture NAME (tiny-qwen2, tiny-llama, tiny-qwen3):
#   aha-tool init-model --config tests/fixtures/NAME/config.json --out DIR/NAME --seed 11
#   aha-tool logprobs --model DIR/NAME --input tests/fixtures/NAME/forward.safetensors \
#       --output DIR/NAME-ours.safetensors --logits
#   cp tests/fixtures/NAME/forward.safetensors DIR/NAME-input.safetensors
# then on the GPU machine: python3 tests/unit/model/hf_load_check.py DIR   (exit 1 on failure)
import sys
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

root = sys.argv[1]
ok = True
for name in ["tiny-qwen2", "tiny-llama", "tiny-qwen3"]:
    d = f"{root}/{name}"
    m, info = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, output_loading_info=True)
    m.eval()
    bad = {k: v for k, v in info.items() if v}
    ids = load_file(f"{d}-input.safetensors")["input_ids"].long()
    ours = load_file(f"{d}-ours.safetensors")
    with torch.no_grad():
        logits = m(input_ids=ids).logits.float()
    lp = torch.log_softmax(logits[:, :-1], -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    rl = ((logits - ours["logits"]).norm() / logits.norm()).item()
    rp = ((lp - ours["token_logprobs"]).norm() / lp.norm()).item()
    print(name, type(m).__name__, "params", sum(p.numel() for p in m.parameters()),
          "loading issues", bad, "logits rel", f"{rl:.2e}", "logprobs rel", f"{rp:.2e}")
    ok = ok and not bad and rl < 1e-4 and rp < 1e-4
print("ALL OK" if ok else "FAILED")
sys.exit(0 if ok else 1)
