/* tool.h: the subcommands of aha-tool, the developer tool. Each returns the process exit
 * status: 0 ok, 2 bad arguments or files (after a one-line error on stderr), 1 other failure. */
#ifndef AHA_TOOL_H
#define AHA_TOOL_H

int tool_tokenize(int argc, char **argv);      /* tool_tokenize.c */
int tool_make_tokenizer(int argc, char **argv); /* tool_tokenize.c */
int tool_logprobs(int argc, char **argv);      /* tool_model.c */
int tool_grpo_grad(int argc, char **argv);     /* tool_model.c */
int tool_sft_grad(int argc, char **argv);      /* tool_model.c */
int tool_init_model(int argc, char **argv);    /* tool_model.c */
int tool_demo_logprobs(int argc, char **argv); /* tool_model.c */

#endif
