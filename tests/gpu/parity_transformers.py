# Parity of aha's CUDA backend with transformers at the Qwen2.5-0.5B shape (hidden 896, 24
# layers, 14 heads, 2 KV heads, intermediate 4864, vocabulary 151,936, tied embeddings): a
# random model written by transformers in bf16, token logprobs of random sequences from
# transformers (bf16 on the GPU, as a user would run it, and fp32 on the same bf16 weights as
# the truth), then aha-tool's on the CUDA backend; passes when aha's logprobs are within 2e-2
# relative error (||a - b|| / ||b||) of transformers' bf16 ones. Runs on the device machine.
# Usage: python3 parity_transformers.py make DIR      (model + input + transformers' logprobs)
#        aha-tool logprobs --device cuda:0 --model DIR/model --input DIR/input.safetensors \
#                 --output DIR/aha.safetensors
#        python3 parity_transformers.py compare DIR   (prints errors; exit 1 on failure)
import os, sys
import torch
from safetensors.torch import load_file, save_file

mode, d = sys.argv[1], sys.argv[2]
B, T = 8, 512

if mode == "make":
    from transformers import Qwen2Config, Qwen2ForCausalLM
    torch.manual_seed(2026)
    cfg = Qwen2Config(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                      num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768,
                      rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=True)
    cfg._attn_implementation = "sdpa"
    model = Qwen2ForCausalLM(cfg)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "norm" in n:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            if n.endswith(".bias"):
                p.copy_(0.05 * torch.randn_like(p))
    model = model.to(torch.bfloat16)
    model.save_pretrained(os.path.join(d, "model"), safe_serialization=True)
    ids = torch.randint(0, 151936, (B, T))
    save_file({"input_ids": ids.to(torch.int32)}, os.path.join(d, "input.safetensors"))
    out = {}
    with torch.no_grad():
        for name, dt in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
            m = model.to("cuda", dt).eval()
            logits = m(input_ids=ids.cuda()).logits[:, :-1].float()
            lp = torch.log_softmax(logits, -1).gather(-1, ids[:, 1:].cuda().unsqueeze(-1)).squeeze(-1)
            out[name] = lp.cpu().contiguous()
    save_file(out, os.path.join(d, "transformers.safetensors"))
    print("wrote", d, "logprob mean", float(out["bf16"].mean()), "std", float(out["bf16"].std()))
else:
    tf = load_file(os.path.join(d, "transformers.safetensors"))
    ours = load_file(os.path.join(d, "aha.safetensors"))["token_logprobs"].float()

    def rel(a, b):
        return float((a - b).norm() / b.norm())

    def crel(a, b):  # relative error of the centred logprobs: what differs from token to token
        a, b = a - a.mean(), b - b.mean()
        return float((a - b).norm() / b.norm())

    r = rel(ours, tf["bf16"])
    print(f"aha cuda vs transformers bf16: rel {r:.3e} (centred {crel(ours, tf['bf16']):.3e}), "
          f"max |d| {float((ours - tf['bf16']).abs().max()):.3e}")
    print(f"aha cuda vs transformers fp32: rel {rel(ours, tf['fp32']):.3e} (centred {crel(ours, tf['fp32']):.3e})")
    print(f"transformers bf16 vs fp32:     rel {rel(tf['bf16'], tf['fp32']):.3e} "
          f"(centred {crel(tf['bf16'], tf['fp32']):.3e})")
    print("PARITY", "PASS" if r <= 2e-2 else "FAIL")
    sys.exit(0 if r <= 2e-2 else 1)
