/* tool_tokenize.c: placeholder until the tokenizer lands (replaced by the tokenizer work). */
#include <stdio.h>

#include "tool.h"

int tool_tokenize(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "aha-tool tokenize: not built yet\n");
    return 1;
}
