#!/usr/bin/python3
"""Seed corpora of the RPC fuzz targets (fuzz_rpc_reward, fuzz_rpc_refpolicy,
fuzz_rpc_rollout, fuzz_weightpush): aha.v1 messages written in protobuf text format and
encoded with `protoc --encode` against proto/, so the seeds follow the .proto files.
Run from the repository root: python3 tests/fuzz/corpus/make_rpc_seeds.py"""
import os
import struct
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
OUT = os.path.join(ROOT, "tests", "fuzz", "corpus")


def enc(proto, msg, text):
    return subprocess.run(["protoc", "-I", os.path.join(ROOT, "proto"), "--encode=aha.v1." + msg,
                           os.path.join(ROOT, "proto", "aha", "v1", proto)],
                          input=text.encode(), capture_output=True, check=True).stdout


def write(target, name, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def q(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


# --- reward: byte 0 even = ScoreRequest, odd = GroupAnswersRequest
code = "<think>x</think><answer>\n```python\nprint(int(input())*2)\n```\n</answer>"
cases = '[{"input": "2", "output": "4\\n"}]'
write("fuzz_rpc_reward", "score_math", b"\0" + enc("reward.proto", "ScoreRequest",
      'items { id: "a" completion: %s reference_answer: "4" language: "en" }'
      % q("<think>two plus two</think><answer>4</answer>")))
write("fuzz_rpc_reward", "score_code", b"\0" + enc("reward.proto", "ScoreRequest",
      'items { id: "c" task: "code:python" completion: %s reference_answer: %s }'
      ' items { id: "d" task: "code:c" completion: "```c\\nint main(void){return 0;}\\n```"'
      ' reference_answer: "[]" } config_json: %s'
      % (q(code), q(cases), q('{"weights": {"accuracy": 1, "format": 0.5}}'))))
write("fuzz_rpc_reward", "score_bad_task", b"\0" + enc("reward.proto", "ScoreRequest",
      'items { task: "code:rust" completion: "```rust\\n```" } items { task: "code" }'))
write("fuzz_rpc_reward", "group", b"\1" + enc("reward.proto", "GroupAnswersRequest",
      'answers: "<answer>1/2</answer>" answers: "\\\\boxed{0.5}" answers: "x" extract: true'))

# --- refpolicy LogProbs (tiny-qwen2: vocabulary 512)
write("fuzz_rpc_refpolicy", "ok", enc("refpolicy.proto", "LogProbsRequest",
      'sequences { id: "s0" token_ids: [1, 2, 3, 4, 5] prompt_len: 2 }'
      ' sequences { id: "s1" token_ids: [7, 8] prompt_len: 1 }'))
write("fuzz_rpc_refpolicy", "bad_prompt_len", enc("refpolicy.proto", "LogProbsRequest",
      'sequences { id: "a" token_ids: [1, 2] prompt_len: 0 }'
      ' sequences { id: "b" token_ids: [1, 2] prompt_len: -5 }'))
write("fuzz_rpc_refpolicy", "bad_ids", enc("refpolicy.proto", "LogProbsRequest",
      'sequences { id: "v" token_ids: [1, 512, -1] prompt_len: 1 }'))

# --- rollout Generate
write("fuzz_rpc_rollout", "ok", enc("rollout.proto", "GenerateRequest",
      'prompts { id: "p" token_ids: [1, 2, 3] } n: 2'
      ' sampling { temperature: 0.7 top_p: 0.9 top_k: 20 max_new_tokens: 4 seed: 7 }'))
write("fuzz_rpc_rollout", "greedy", enc("rollout.proto", "GenerateRequest",
      'prompts { id: "g" token_ids: [5] } n: 1 sampling { temperature: 0 max_new_tokens: 1 }'))
write("fuzz_rpc_rollout", "bad", enc("rollout.proto", "GenerateRequest",
      'prompts { id: "x" token_ids: [600] } n: 0 sampling { top_p: 2 top_k: -1 max_new_tokens: 100000 }'))

# --- weightpush: chunks as (u16 little-endian length, WeightChunk)
def chunk(text):
    b = enc("weights.proto", "WeightChunk", text)
    return struct.pack("<H", len(b)) + b


norm = bytes(4 * 64)
hdr = 'header { version: 3 tensor_count: 25 total_bytes: 504000 } '
write("fuzz_weightpush", "two_tensors",
      chunk(hdr + 'name: "model.norm.weight" dtype: "F32" shape: [64] offset: 0 tensor_bytes: 256 data: "%s"'
            % ("\\000" * 128)) +
      chunk('name: "model.norm.weight" dtype: "F32" shape: [64] offset: 128 tensor_bytes: 256 data: "%s"'
            % ("\\000" * 128)) +
      chunk('name: "model.layers.0.self_attn.k_proj.bias" dtype: "BF16" shape: [32] offset: 0 '
            'tensor_bytes: 64 data: "%s"' % ("\\200\\077" * 32)))
write("fuzz_weightpush", "bad_shape",
      chunk(hdr + 'name: "model.norm.weight" dtype: "F32" shape: [65] offset: 0 tensor_bytes: 260 data: "x"'))
write("fuzz_weightpush", "bad_offset",
      chunk(hdr + 'name: "model.norm.weight" dtype: "F32" shape: [64] offset: 4 tensor_bytes: 256 data: "abcd"') +
      chunk('name: "nope" dtype: "F16" shape: [1] offset: -1 tensor_bytes: 2 data: "ab"'))
write("fuzz_weightpush", "header_only", chunk('header { version: 1 tensor_count: 0 total_bytes: 0 }'))
