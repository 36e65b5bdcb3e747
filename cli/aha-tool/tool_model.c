/* tool_model.c: placeholder until the model lands (replaced by the model work). */
#include <stdio.h>

#include "tool.h"

static int not_yet(const char *what)
{
    fprintf(stderr, "aha-tool %s: not built yet\n", what);
    return 1;
}

int tool_logprobs(int argc, char **argv) { (void)argc; (void)argv; return not_yet("logprobs"); }
int tool_grpo_grad(int argc, char **argv) { (void)argc; (void)argv; return not_yet("grpo-grad"); }
int tool_sft_grad(int argc, char **argv) { (void)argc; (void)argv; return not_yet("sft-grad"); }
int tool_init_model(int argc, char **argv) { (void)argc; (void)argv; return not_yet("init-model"); }
int tool_demo_logprobs(int argc, char **argv) { (void)argc; (void)argv; return not_yet("demo-logprobs"); }
