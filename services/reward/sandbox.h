/* sandbox.h: run untrusted programs (a model's code answers) and the code-execution reward
 * of DeepSeek-R1 on top of it (issue 9).
 *
 * A sandbox is a private temporary directory (mode 0700) plus, when the service runs as root,
 * a uid of its own. aha_sandbox_run starts one program in it:
 *   - its own process (raw clone, then exec) in new PID, network, mount, IPC and UTS
 *     namespaces (plus a user namespace when not root), so it sees no network interface but
 *     a down loopback and its process tree dies with it; where the kernel refuses a namespace
 *     the run continues without it and a warning is logged once;
 *   - as root: a uid/gid from opts.uid_base.. (no supplementary groups), so RLIMIT_NPROC is
 *     enforced and nothing the service owns is writable;
 *   - rlimits: CPU seconds (soft = hard: SIGKILL), address space, processes, file size, open
 *     files, no core files;
 *   - Landlock (where the kernel has it): read and execute under /usr only (plus
 *     /etc/ld.so.cache and a few /dev nodes), read and write in its directory, no TCP;
 *   - no_new_privs and a seccomp filter that refuses (EPERM) sockets, ptrace, mount, namespace
 *     creation, module/kexec/bpf/perf/keyring calls, process-group changes and other
 *     administration, and kills on a foreign syscall ABI;
 *   - an empty environment (PATH, HOME and TMPDIR = its directory, LANG=C.UTF-8), stdin from
 *     a memory file, stdout and stderr through pipes; stdout is read up to opts.max_output
 *     bytes and the program is killed when it writes more;
 *   - a wall-clock limit, after which its process group (and PID namespace) is killed.
 * The service's own threads are never touched: between clone and exec the child makes only
 * system calls (no allocation, no locks).
 *
 * The code reward (ScoreItem.task "code:python" or "code:c"; "code" alone means python):
 *   - the program is the last fenced block (```python / ```py / ```python3, or ```c; an
 *     untagged ``` block when none is tagged) inside the last <answer>…</answer> pair when
 *     the completion has one, else anywhere in the completion;
 *   - reference_answer is a JSON array of test cases [{"input": "...", "output": "..."}, ...]
 *     (at most opts.max_cases, at least one);
 *   - C is compiled first (cc -O1 -std=gnu11 … -lm, in the sandbox with the compile limits);
 *     python runs as python3 -I -B prog.py;
 *   - each case runs in a fresh process with the input on stdin; stdout is compared with the
 *     expected output after removing trailing whitespace from every line and trailing empty
 *     lines; accuracy is 1 only when every case passes (the first failing case stops it);
 *   - the verdict carries a reason: which case failed and why (wrong output, exit status,
 *     signal, CPU/wall/output limit, compile error, no program found). */
#ifndef AHA_SERVICES_REWARD_SANDBOX_H
#define AHA_SERVICES_REWARD_SANDBOX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/status.h"

/* public: limits and tools. aha_sandbox_opts_init gives the defaults in brackets. */
typedef struct {
    double cpu_s;            /* RLIMIT_CPU of one test run, seconds [2] */
    double wall_s;           /* wall clock of one test run, seconds [5] */
    double compile_cpu_s;    /* the same for the C compiler [10] */
    double compile_wall_s;   /* [20] */
    int64_t mem_bytes;       /* RLIMIT_AS of every process [1 GiB] */
    int nproc;               /* RLIMIT_NPROC (tasks of the sandbox uid) [32] */
    int64_t file_bytes;      /* RLIMIT_FSIZE [4 MiB] */
    int nofile;              /* RLIMIT_NOFILE [64] */
    size_t max_output;       /* stdout bytes read; more kills the run [1 MiB] */
    int max_cases;           /* test cases per item [64] */
    unsigned uid_base;       /* as root: sandboxes run as uid_base + k, k < uid_count [61000] */
    unsigned uid_count;      /* [2000] */
    const char *python;      /* [/usr/bin/python3] */
    const char *cc;          /* [/usr/bin/cc] */
    const char *tmp_root;    /* where private directories are made [$TMPDIR or /tmp] */
} aha_sandbox_opts;

void aha_sandbox_opts_init(aha_sandbox_opts *o);

typedef enum {
    AHA_SANDBOX_EXITED = 0,  /* exited: code = exit status */
    AHA_SANDBOX_SIGNALED,    /* killed by signal `code` (SIGKILL at the CPU limit) */
    AHA_SANDBOX_TIMEOUT,     /* wall-clock limit: killed */
    AHA_SANDBOX_OUTPUT,      /* wrote more than max_output bytes to stdout: killed */
} aha_sandbox_outcome;

/* written by aha_sandbox_run; free with aha_sandbox_result_free */
typedef struct {
    aha_sandbox_outcome outcome;
    int code;
    bool cpu_limit;          /* SIGKILL/SIGXCPU after using the CPU limit */
    char *out;               /* stdout, NUL-terminated (at most max_output bytes) */
    size_t out_len;
    char err[512];           /* the first bytes of stderr, NUL-terminated */
    double wall_s;
    double cpu_s;            /* user + system CPU of the program's process */
} aha_sandbox_result;

typedef struct aha_sandbox aha_sandbox;

/* Make a private directory (and pick a uid). The opts are copied. */
aha_status aha_sandbox_create(const aha_sandbox_opts *o, aha_sandbox **out, aha_err *err);
/* Remove the directory and everything in it. NULL is fine. */
void aha_sandbox_free(aha_sandbox *sb);
const char *aha_sandbox_dir(const aha_sandbox *sb);
/* Write file `name` (a plain name, no '/') into the directory, readable by the program. */
aha_status aha_sandbox_write(aha_sandbox *sb, const char *name, const void *data, size_t len,
                             aha_err *err);
/* Run argv[0] (an absolute path) with argv in the sandbox; `in` is its stdin. cpu_s and
 * wall_s override the opts' run limits when > 0. AHA_OK when the program ran (whatever its
 * outcome); an error status only when the sandbox itself could not be set up. */
aha_status aha_sandbox_run(aha_sandbox *sb, const char *const *argv, const void *in,
                           size_t in_len, double cpu_s, double wall_s, aha_sandbox_result *r,
                           aha_err *err);
void aha_sandbox_result_free(aha_sandbox_result *r);

/* Which isolation this kernel and process allow: a bit set of the AHA_SANDBOX_HAS_* values
 * (probed once; the first call logs a warning for each layer that is missing). */
enum {
    AHA_SANDBOX_HAS_PIDNS = 1,
    AHA_SANDBOX_HAS_NETNS = 2,
    AHA_SANDBOX_HAS_USERNS = 4,   /* used only when not root */
    AHA_SANDBOX_HAS_LANDLOCK = 8,
    AHA_SANDBOX_HAS_SECCOMP = 16,
    AHA_SANDBOX_HAS_UID = 32,     /* root: a uid of its own */
};
unsigned aha_sandbox_capabilities(void);

/* ---- the code reward ---- */

typedef enum { AHA_CODE_NONE = 0, AHA_CODE_PYTHON, AHA_CODE_C } aha_code_lang;

/* The language of a ScoreItem.task: AHA_CODE_NONE when the task is not "code" or does not
 * start with "code:"; EINVAL (with a message) for "code:<unknown>". */
aha_status aha_code_task_lang(const char *task, size_t len, aha_code_lang *lang, aha_err *err);

/* The candidate program: on true, [*off, *off + *n) of completion (the rule above). */
bool aha_code_extract(const char *completion, size_t len, aha_code_lang lang, size_t *off,
                      size_t *n);

/* Whether two outputs are equal after trailing-whitespace normalisation. */
bool aha_code_output_equal(const char *a, size_t alen, const char *b, size_t blen);

typedef struct {
    bool passed;             /* every case passed: accuracy 1 */
    int cases_passed;
    int cases_total;
    char reason[256];        /* "passed 3/3 cases" or why not */
} aha_code_verdict;

/* Judge a completion against JSON test cases. AHA_OK when judged (v->passed says how);
 * EINVAL when the test cases are malformed (a message says where), another status when the
 * sandbox could not be set up. */
aha_status aha_code_score(const aha_sandbox_opts *o, aha_code_lang lang, const char *completion,
                          size_t len, const char *tests, size_t tests_len, aha_code_verdict *v,
                          aha_err *err);

#endif
