/* auth.c: secrets (bearer tokens) from files or the environment, and the "is this address
 * local" test behind the plaintext warning. The server's token checks are in server.c
 * (call_auth); see rpc.h for the rules. A secret's value never reaches a log line or an
 * error message: messages name the file or the variable only. */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "base/fs.h"
#include "rpc/rpc.h"

aha_status aha_rpc_read_secret(const char *file, const char *env, char **out, aha_err *err)
{
    *out = NULL;
    char *text = NULL;
    size_t len = 0;
    if (file) {
        AHA_TRY(aha_read_file(file, 4096, &text, &len, err));
    } else {
        const char *v = env ? getenv(env) : NULL;
        if (!v || !*v) return AHA_OK;
        len = strlen(v);
        if (len > 4096) return aha_errf(err, AHA_EINVAL, "$%s: longer than 4 KiB", env);
        text = malloc(len + 1);
        if (!text) return aha_errf(err, AHA_ENOMEM, "out of memory");
        memcpy(text, v, len + 1);
    }
    while (len > 0 && (text[len - 1] == '\n' || text[len - 1] == '\r' ||
                       text[len - 1] == ' ' || text[len - 1] == '\t'))
        text[--len] = 0;
    int printable = len > 0 && strlen(text) == len;
    for (size_t i = 0; printable && i < len; i++)
        if (!isgraph((unsigned char)text[i])) printable = 0;
    if (!printable) {
        free(text);
        /* the header value must be visible ASCII: a newline would split the header */
        return file ? aha_errf(err, AHA_EINVAL, "%s: empty token or not printable ASCII", file)
                    : aha_errf(err, AHA_EINVAL, "$%s: empty token or not printable ASCII", env);
    }
    *out = text;
    return AHA_OK;
}

int aha_rpc_addr_is_local(const char *listen)
{
    if (strncmp(listen, "unix:", 5) == 0 || strncmp(listen, "unix-abstract:", 14) == 0) return 1;
    if (strncmp(listen, "ipv4:", 5) == 0) listen += 5;
    else if (strncmp(listen, "ipv6:", 5) == 0) listen += 5;
    if (strncmp(listen, "127.", 4) == 0) return 1;
    if (strncmp(listen, "[::1]:", 6) == 0) return 1;
    if (strncmp(listen, "localhost:", 10) == 0) return 1;
    return 0;
}
