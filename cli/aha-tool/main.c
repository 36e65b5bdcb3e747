/* aha-tool: developer tool over libaha (tokenize, logprobs, gradients, random models).
 * Later tests and benchmarks drive libaha through it. */
#include <stdio.h>
#include <string.h>

#include "tool.h"

static const struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *help;
} commands[] = {
    {"tokenize", tool_tokenize, "--tokenizer PATH  (JSON lines {\"text\":...} on stdin)"},
    {"make-tokenizer", tool_make_tokenizer, "--out DIR [--special TOKEN]...  (byte-level tokenizer.json)"},
    {"logprobs", tool_logprobs, "--model DIR --input IN.safetensors --output OUT.safetensors [--logits]"},
    {"grpo-grad", tool_grpo_grad, "--model DIR --input GRPO.safetensors --output OUT.safetensors"},
    {"sft-grad", tool_sft_grad, "--model DIR --input SFT.safetensors --output OUT.safetensors"},
    {"init-model", tool_init_model, "--config CONFIG.json --out DIR --seed N"},
    {"demo-logprobs", tool_demo_logprobs, "--model DIR  (print logprobs of a tokenised sentence)"},
};

static void usage(FILE *f)
{
    fprintf(f, "usage: aha-tool COMMAND [options]\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-14s %s\n", commands[i].name, commands[i].help);
}

int main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(argv[1], commands[i].name) == 0) return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "aha-tool: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
