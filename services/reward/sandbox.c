/* sandbox.c: the process sandbox and the code-execution reward (see sandbox.h).
 *
 * Invariants:
 *   - the child of clone() runs only system calls until execve: the service is
 *     multithreaded, so another thread may hold the allocator's or the logger's lock at the
 *     moment of the clone. Everything the child needs (argv, envp, map lines, the seccomp
 *     program) is prepared by the parent beforehand;
 *   - every run ends with its process group and PID namespace killed and the child reaped,
 *     whatever happened (timeout, output limit, read error);
 *   - the uid of a sandbox (as root) is not the service's, so RLIMIT_NPROC is enforced
 *     (the kernel exempts root) and the program cannot write anything the service owns. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "sandbox.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <jansson.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/landlock.h>
#include <linux/seccomp.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <dirent.h>
#include <unistd.h>

#include "base/fs.h"
#include "base/log.h"

/* Newer kernel ABI than Debian 12's headers know: the values are fixed by the kernel ABI. */
#ifndef LANDLOCK_ACCESS_FS_TRUNCATE
#define LANDLOCK_ACCESS_FS_TRUNCATE (1ULL << 14)
#endif
#ifndef LANDLOCK_ACCESS_FS_IOCTL_DEV
#define LANDLOCK_ACCESS_FS_IOCTL_DEV (1ULL << 15)
#endif
#define AHA__LL_NET_BIND_TCP (1ULL << 0)
#define AHA__LL_NET_CONNECT_TCP (1ULL << 1)
#define AHA__LL_SCOPE_ABSTRACT_UNIX (1ULL << 0)
#define AHA__LL_SCOPE_SIGNAL (1ULL << 1)
#ifndef SYS_landlock_create_ruleset
#define SYS_landlock_create_ruleset 444
#define SYS_landlock_add_rule 445
#define SYS_landlock_restrict_self 446
#endif
#ifndef CLONE_NEWCGROUP
#define CLONE_NEWCGROUP 0x02000000
#endif
#ifndef CLONE_NEWTIME
#define CLONE_NEWTIME 0x00000080
#endif

/* landlock_ruleset_attr as of ABI 6; the size passed tells the kernel which fields exist. */
typedef struct {
    uint64_t handled_access_fs;
    uint64_t handled_access_net;
    uint64_t scoped;
} ll_ruleset_attr;

void aha_sandbox_opts_init(aha_sandbox_opts *o)
{
    memset(o, 0, sizeof *o);
    o->cpu_s = 2;
    o->wall_s = 5;
    o->compile_cpu_s = 10;
    o->compile_wall_s = 20;
    o->mem_bytes = (int64_t)1 << 30;
    o->nproc = 32;
    o->file_bytes = (int64_t)4 << 20;
    o->nofile = 64;
    o->max_output = (size_t)1 << 20;
    o->max_cases = 64;
    o->uid_base = 61000;
    o->uid_count = 2000;
    o->python = "/usr/bin/python3";
    o->cc = "/usr/bin/cc";
    o->tmp_root = NULL;
}

/* ------------------------------------------------------------------------------------ */
/* What this kernel allows (probed once)                                                */

static pthread_once_t g_probe_once = PTHREAD_ONCE_INIT;
static unsigned g_caps;
static int g_ns_flags;       /* clone flags that worked */
static int g_ll_abi;         /* Landlock ABI version, 0 = none */
static struct sock_filter g_filter[128];
static struct sock_fprog g_fprog;
static atomic_uint g_uid_next;

static int ns_flags_wanted(void)
{
    int f = CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS;
    if (geteuid() != 0) f |= CLONE_NEWUSER;
    return f;
}

/* A child made with these flags that exits at once: does the kernel allow them here? */
static int try_clone_flags(int flags)
{
    long pid = syscall(SYS_clone, (unsigned long)(flags | SIGCHLD), NULL, NULL, NULL, NULL);
    if (pid < 0) return 0;
    if (pid == 0) _exit(0);
    int status = 0;
    while (waitpid((pid_t)pid, &status, 0) < 0 && errno == EINTR) {
    }
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

/* The seccomp program: refuse (EPERM) what a test-case program never needs and what would
 * let it reach outside; ENOSYS for clone3 so libc falls back to clone, whose flags are
 * checked. A foreign ABI (x32, or another arch) kills the process. */
static void build_filter(void)
{
#if defined(__x86_64__)
    const uint32_t arch = AUDIT_ARCH_X86_64;
#elif defined(__aarch64__)
    const uint32_t arch = AUDIT_ARCH_AARCH64;
#else
    const uint32_t arch = 0;
#endif
    if (!arch) return;
    static const int deny[] = {
        SYS_socket, SYS_socketpair, SYS_connect, SYS_bind, SYS_listen, SYS_accept,
        SYS_accept4, SYS_ptrace, SYS_process_vm_readv, SYS_process_vm_writev, SYS_mount,
        SYS_umount2, SYS_pivot_root, SYS_chroot, SYS_unshare, SYS_setns, SYS_kexec_load,
        SYS_init_module, SYS_finit_module, SYS_delete_module, SYS_reboot, SYS_swapon,
        SYS_swapoff, SYS_bpf, SYS_perf_event_open, SYS_keyctl, SYS_add_key, SYS_request_key,
        SYS_userfaultfd, SYS_io_uring_setup, SYS_io_uring_enter, SYS_io_uring_register,
        SYS_setsid, SYS_setpgid, SYS_acct, SYS_settimeofday, SYS_clock_settime, SYS_adjtimex,
        SYS_sethostname, SYS_setdomainname, SYS_quotactl, SYS_open_by_handle_at,
        SYS_name_to_handle_at, SYS_syslog, SYS_fanotify_init, SYS_mknodat, SYS_personality,
        SYS_fsopen, SYS_fsmount, SYS_move_mount, SYS_open_tree, SYS_mount_setattr,
        SYS_landlock_create_ruleset,
#if defined(__x86_64__)
        SYS_kexec_file_load, SYS_iopl, SYS_ioperm, SYS_mknod, SYS_uselib, SYS_sysfs,
#endif
    };
    const uint32_t clone_ns = CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC |
                              CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWTIME;
    size_t n = 0;
    struct sock_filter *f = g_filter;
    const size_t nd = sizeof deny / sizeof deny[0];
    /* Layout: [0] load arch [1] arch ok? [2] kill [3] load nr [4] x32? -> EPERM
     * [5] clone? -> 7.. [6] clone3? -> ENOSYS, then the deny list, allow, EPERM, ENOSYS,
     * clone flag check. Jumps are relative, computed from the fixed layout below. */
    const size_t i_allow = 7 + nd, i_eperm = i_allow + 1, i_enosys = i_eperm + 1,
                 i_clone = i_enosys + 1;
    f[n++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
                                          offsetof(struct seccomp_data, arch));
    f[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, arch, 1, 0);
    f[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS);
    f[n++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
                                          offsetof(struct seccomp_data, nr));
#if defined(__x86_64__)
    f[n] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, 0x40000000u,
                                        (uint8_t)(i_eperm - n - 1), 0);
#else
    f[n] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, 0xffffffffu, 0, 0);
#endif
    n++;
    f[n] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_clone,
                                        (uint8_t)(i_clone - n - 1), 0);
    n++;
    f[n] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_clone3,
                                        (uint8_t)(i_enosys - n - 1), 0);
    n++;
    for (size_t k = 0; k < nd; k++, n++)
        f[n] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (uint32_t)deny[k],
                                            (uint8_t)(i_eperm - n - 1), 0);
    AHA_ASSERT(n == i_allow);
    f[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
    f[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM);
    f[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS);
    AHA_ASSERT(n == i_clone);
    /* clone(flags, ...): the low 32 bits of the first argument hold the namespace flags. */
    f[n++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
                                          offsetof(struct seccomp_data, args[0]));
    f[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, clone_ns, 1, 0);
    f[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
    f[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM);
    AHA_ASSERT(n <= sizeof g_filter / sizeof g_filter[0]);
    g_fprog.len = (unsigned short)n;
    g_fprog.filter = g_filter;
}

static void probe(void)
{
    /* Start the uid rotation somewhere of this process's own: two services (or test runs) on
     * one host would otherwise hand out the same uids, and RLIMIT_NPROC counts per uid. */
    atomic_store(&g_uid_next, (unsigned)getpid() * 2654435761u);
    int want = ns_flags_wanted();
    if (try_clone_flags(want)) {
        g_ns_flags = want;
    } else {
        /* Try the layers one by one: keep those the kernel allows. */
        int got = 0;
        static const int each[] = {CLONE_NEWPID, CLONE_NEWNET, CLONE_NEWNS, CLONE_NEWIPC,
                                   CLONE_NEWUTS};
        int base = (want & CLONE_NEWUSER) ? CLONE_NEWUSER : 0;
        if (base && !try_clone_flags(base)) base = 0;
        for (size_t k = 0; k < sizeof each / sizeof each[0]; k++)
            if (try_clone_flags(base | got | each[k])) got |= each[k];
        g_ns_flags = base | got;
        AHA_WARN("sandbox: the kernel refused some namespaces (wanted 0x%x, using 0x%x): "
                 "isolation relies on the other layers",
                 (unsigned)want, (unsigned)g_ns_flags);
    }
    if (g_ns_flags & CLONE_NEWPID) g_caps |= AHA_SANDBOX_HAS_PIDNS;
    if (g_ns_flags & CLONE_NEWNET) g_caps |= AHA_SANDBOX_HAS_NETNS;
    if (g_ns_flags & CLONE_NEWUSER) g_caps |= AHA_SANDBOX_HAS_USERNS;
    if (geteuid() == 0) g_caps |= AHA_SANDBOX_HAS_UID;
    long abi = syscall(SYS_landlock_create_ruleset, NULL, 0, LANDLOCK_CREATE_RULESET_VERSION);
    g_ll_abi = abi > 0 ? (int)abi : 0;
    if (g_ll_abi) g_caps |= AHA_SANDBOX_HAS_LANDLOCK;
    else
        AHA_WARN("sandbox: no Landlock in this kernel: programs can read files outside "
                 "their directory");
    build_filter();
    if (g_fprog.len) g_caps |= AHA_SANDBOX_HAS_SECCOMP;
    else AHA_WARN("sandbox: no seccomp filter for this architecture");
    if (!(g_caps & AHA_SANDBOX_HAS_PIDNS))
        AHA_WARN("sandbox: no PID namespace: a process group kill is the only cleanup");
    if (!(g_caps & AHA_SANDBOX_HAS_NETNS))
        AHA_WARN("sandbox: no network namespace: seccomp alone refuses sockets");
}

unsigned aha_sandbox_capabilities(void)
{
    pthread_once(&g_probe_once, probe);
    return g_caps;
}

/* ------------------------------------------------------------------------------------ */
/* Sandboxes                                                                            */

struct aha_sandbox {
    aha_sandbox_opts o;
    char dir[512];
    char env_home[560], env_tmp[560];
    char *envp[5];
    bool drop;                /* root: run as uid */
    unsigned uid;
    char uid_map[64], gid_map[64];
};

aha_status aha_sandbox_create(const aha_sandbox_opts *o, aha_sandbox **out, aha_err *err)
{
    *out = NULL;
    aha_sandbox_capabilities();
    aha_sandbox *sb = calloc(1, sizeof *sb);
    if (!sb) return aha_errf(err, AHA_ENOMEM, "sandbox: out of memory");
    sb->o = *o;
    const char *root = o->tmp_root ? o->tmp_root : getenv("TMPDIR");
    if (!root || !*root) root = "/tmp";
    int n = snprintf(sb->dir, sizeof sb->dir, "%s/aha-sandbox-XXXXXX", root);
    if (n < 0 || (size_t)n >= sizeof sb->dir) {
        free(sb);
        return aha_errf(err, AHA_EINVAL, "sandbox: temporary directory path too long");
    }
    if (!mkdtemp(sb->dir)) {
        int e = errno;
        free(sb);
        return aha_errf(err, AHA_EIO, "sandbox: mkdtemp in %s: %s", root, strerror(e));
    }
    if (geteuid() == 0 && o->uid_count > 0) {
        sb->drop = true;
        sb->uid = o->uid_base + atomic_fetch_add(&g_uid_next, 1u) % o->uid_count;
        if (chown(sb->dir, sb->uid, sb->uid) != 0) {
            int e = errno;
            rmdir(sb->dir);
            free(sb);
            return aha_errf(err, AHA_EIO, "sandbox: chown %s: %s", sb->dir, strerror(e));
        }
    }
    snprintf(sb->uid_map, sizeof sb->uid_map, "%u %u 1\n", (unsigned)geteuid(),
             (unsigned)geteuid());
    snprintf(sb->gid_map, sizeof sb->gid_map, "%u %u 1\n", (unsigned)getegid(),
             (unsigned)getegid());
    snprintf(sb->env_home, sizeof sb->env_home, "HOME=%s", sb->dir);
    snprintf(sb->env_tmp, sizeof sb->env_tmp, "TMPDIR=%s", sb->dir);
    sb->envp[0] = "PATH=/usr/bin:/bin";
    sb->envp[1] = sb->env_home;
    sb->envp[2] = sb->env_tmp;
    sb->envp[3] = "LANG=C.UTF-8";
    sb->envp[4] = NULL;
    *out = sb;
    return AHA_OK;
}

void aha_sandbox_free(aha_sandbox *sb)
{
    if (!sb) return;
    aha_err e;
    if (aha_remove_tree(sb->dir, &e) != AHA_OK) AHA_WARN("sandbox: %s", e.msg);
    free(sb);
}

const char *aha_sandbox_dir(const aha_sandbox *sb)
{
    return sb->dir;
}

aha_status aha_sandbox_write(aha_sandbox *sb, const char *name, const void *data, size_t len,
                             aha_err *err)
{
    if (!*name || strchr(name, '/') || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
        return aha_errf(err, AHA_EINVAL, "sandbox: bad file name '%s'", name);
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", sb->dir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0) return aha_errf(err, AHA_EIO, "sandbox: create %s: %s", path, strerror(errno));
    const char *p = data;
    size_t left = len;
    while (left > 0) {
        ssize_t w = write(fd, p, left);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            int e = errno;
            close(fd);
            return aha_errf(err, AHA_EIO, "sandbox: write %s: %s", path, strerror(e));
        }
        p += w;
        left -= (size_t)w;
    }
    if (sb->drop && fchown(fd, sb->uid, sb->uid) != 0) {
        int e = errno;
        close(fd);
        return aha_errf(err, AHA_EIO, "sandbox: chown %s: %s", path, strerror(e));
    }
    close(fd);
    return AHA_OK;
}

/* Tasks (threads included) whose real uid is `uid`: RLIMIT_NPROC counts them all, so a
 * sandbox sharing the service's uid (not root) gets its budget on top of them. */
static long tasks_of_uid(uid_t uid)
{
    DIR *d = opendir("/proc");
    if (!d) return 0;
    long total = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
        char path[64], buf[2048];
        snprintf(path, sizeof path, "/proc/%.20s/status", e->d_name);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) continue;
        ssize_t n = read(fd, buf, sizeof buf - 1);
        close(fd);
        if (n <= 0) continue;
        buf[n] = 0;
        const char *u = strstr(buf, "\nUid:");
        const char *t = strstr(buf, "\nThreads:");
        if (!u || !t) continue;
        if ((uid_t)strtoul(u + 5, NULL, 10) != uid) continue;
        total += strtol(t + 9, NULL, 10);
    }
    closedir(d);
    return total;
}

/* ---- the child, between clone and execve: system calls only ---- */

typedef struct {
    const char *const *argv;
    char *const *envp;
    const char *dir;
    int in_fd, out_fd, err_fd, rep_fd;
    int userns;
    const char *uid_map, *gid_map;
    int drop;
    unsigned uid;
    struct rlimit lim_cpu, lim_as, lim_nproc, lim_fsize, lim_nofile;
    int ll_abi;
    const struct sock_fprog *fprog;
} child_args;

static size_t c_strlen(const char *s)
{
    size_t n = 0;
    while (s[n]) n++;
    return n;
}

static void c_write(int fd, const char *s)
{
    size_t n = c_strlen(s);
    while (n > 0) {
        ssize_t w = write(fd, s, n);
        if (w <= 0) return;
        s += w;
        n -= (size_t)w;
    }
}

static __attribute__((noreturn)) void c_fail(const child_args *a, const char *what)
{
    int e = errno;
    char num[16];
    int k = (int)sizeof num - 1;
    num[k] = 0;
    do {
        num[--k] = (char)('0' + e % 10);
        e /= 10;
    } while (e && k > 0);
    c_write(a->rep_fd, what);
    c_write(a->rep_fd, " failed: errno ");
    c_write(a->rep_fd, num + k);
    _exit(127);
}

static int c_write_file(const char *path, const char *text)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    size_t n = c_strlen(text);
    ssize_t w = write(fd, text, n);
    close(fd);
    return w == (ssize_t)n ? 0 : -1;
}

static void c_ll_allow(const child_args *a, int rfd, const char *path, uint64_t access)
{
    int fd = open(path, O_PATH | O_CLOEXEC);
    if (fd < 0) return; /* absent on this system: nothing to allow */
    struct landlock_path_beneath_attr pb = {.allowed_access = access, .parent_fd = fd};
    if (syscall(SYS_landlock_add_rule, rfd, LANDLOCK_RULE_PATH_BENEATH, &pb, 0) != 0) {
        close(fd);
        c_fail(a, "landlock_add_rule");
    }
    close(fd);
}

static void c_landlock(const child_args *a)
{
    uint64_t fs = LANDLOCK_ACCESS_FS_EXECUTE | LANDLOCK_ACCESS_FS_WRITE_FILE |
                  LANDLOCK_ACCESS_FS_READ_FILE | LANDLOCK_ACCESS_FS_READ_DIR |
                  LANDLOCK_ACCESS_FS_REMOVE_DIR | LANDLOCK_ACCESS_FS_REMOVE_FILE |
                  LANDLOCK_ACCESS_FS_MAKE_CHAR | LANDLOCK_ACCESS_FS_MAKE_DIR |
                  LANDLOCK_ACCESS_FS_MAKE_REG | LANDLOCK_ACCESS_FS_MAKE_SOCK |
                  LANDLOCK_ACCESS_FS_MAKE_FIFO | LANDLOCK_ACCESS_FS_MAKE_BLOCK |
                  LANDLOCK_ACCESS_FS_MAKE_SYM;
    if (a->ll_abi >= 2) fs |= LANDLOCK_ACCESS_FS_REFER;
    if (a->ll_abi >= 3) fs |= LANDLOCK_ACCESS_FS_TRUNCATE;
    if (a->ll_abi >= 5) fs |= LANDLOCK_ACCESS_FS_IOCTL_DEV;
    ll_ruleset_attr attr = {.handled_access_fs = fs};
    size_t size = sizeof(uint64_t);
    if (a->ll_abi >= 4) {
        attr.handled_access_net = AHA__LL_NET_BIND_TCP | AHA__LL_NET_CONNECT_TCP;
        size = 2 * sizeof(uint64_t);
    }
    if (a->ll_abi >= 6) {
        attr.scoped = AHA__LL_SCOPE_ABSTRACT_UNIX | AHA__LL_SCOPE_SIGNAL;
        size = sizeof attr;
    }
    int rfd = (int)syscall(SYS_landlock_create_ruleset, &attr, size, 0);
    if (rfd < 0) c_fail(a, "landlock_create_ruleset");
    const uint64_t rx = LANDLOCK_ACCESS_FS_EXECUTE | LANDLOCK_ACCESS_FS_READ_FILE |
                        LANDLOCK_ACCESS_FS_READ_DIR;
    const uint64_t trunc = a->ll_abi >= 3 ? LANDLOCK_ACCESS_FS_TRUNCATE : 0;
    c_ll_allow(a, rfd, "/usr", rx);
    c_ll_allow(a, rfd, "/etc/ld.so.cache", LANDLOCK_ACCESS_FS_READ_FILE);
    c_ll_allow(a, rfd, "/dev/null",
               LANDLOCK_ACCESS_FS_READ_FILE | LANDLOCK_ACCESS_FS_WRITE_FILE | trunc);
    c_ll_allow(a, rfd, "/dev/zero", LANDLOCK_ACCESS_FS_READ_FILE);
    c_ll_allow(a, rfd, "/dev/urandom", LANDLOCK_ACCESS_FS_READ_FILE);
    c_ll_allow(a, rfd, "/dev/random", LANDLOCK_ACCESS_FS_READ_FILE);
    c_ll_allow(a, rfd, a->dir, fs & ~LANDLOCK_ACCESS_FS_IOCTL_DEV & ~LANDLOCK_ACCESS_FS_REFER);
    if (syscall(SYS_landlock_restrict_self, rfd, 0) != 0) c_fail(a, "landlock_restrict_self");
    close(rfd);
}

static __attribute__((noreturn)) void child_main(const child_args *a)
{
    if (a->userns) {
        /* Map only our own ids: inside, the program is who the service is. */
        if (c_write_file("/proc/self/setgroups", "deny\n") != 0 ||
            c_write_file("/proc/self/uid_map", a->uid_map) != 0 ||
            c_write_file("/proc/self/gid_map", a->gid_map) != 0)
            c_fail(a, "user namespace id maps");
    }
    setpgid(0, 0);
    /* Move the pipe ends above 0..3 first, so that the dup2s below never overwrite one. */
    int in = fcntl(a->in_fd, F_DUPFD_CLOEXEC, 10);
    int out = fcntl(a->out_fd, F_DUPFD_CLOEXEC, 10);
    int er = fcntl(a->err_fd, F_DUPFD_CLOEXEC, 10);
    int rep = fcntl(a->rep_fd, F_DUPFD_CLOEXEC, 10);
    if (in < 0 || out < 0 || er < 0 || rep < 0) c_fail(a, "fcntl");
    child_args b = *a;
    if (dup3(rep, 3, O_CLOEXEC) < 0) c_fail(a, "dup3");
    b.rep_fd = 3;
    a = &b;
    if (dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(er, 2) < 0) c_fail(a, "dup2");
    if (syscall(SYS_close_range, 4u, ~0u, 0u) != 0) {
        for (int fd = 4; fd < 4096; fd++) close(fd);
    }
    if (chdir(a->dir) != 0) c_fail(a, "chdir");
    struct rlimit zero = {0, 0};
    if (setrlimit(RLIMIT_CORE, &zero) != 0 || setrlimit(RLIMIT_CPU, &a->lim_cpu) != 0 ||
        setrlimit(RLIMIT_AS, &a->lim_as) != 0 || setrlimit(RLIMIT_FSIZE, &a->lim_fsize) != 0 ||
        setrlimit(RLIMIT_NOFILE, &a->lim_nofile) != 0 ||
        setrlimit(RLIMIT_NPROC, &a->lim_nproc) != 0)
        c_fail(a, "setrlimit");
    if (a->drop) {
        if (setgroups(0, NULL) != 0) c_fail(a, "setgroups");
        if (setresgid(a->uid, a->uid, a->uid) != 0) c_fail(a, "setresgid");
        if (setresuid(a->uid, a->uid, a->uid) != 0) c_fail(a, "setresuid");
    }
    /* After the uid change, which clears it: the program dies with the service's thread. */
    prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) c_fail(a, "no_new_privs");
    if (a->ll_abi) c_landlock(a);
    if (a->fprog->len && prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, a->fprog, 0, 0) != 0)
        c_fail(a, "seccomp");
    execve(a->argv[0], (char *const *)a->argv, a->envp);
    c_fail(a, "execve");
}

/* ---- the parent ---- */

static void set_rlim(struct rlimit *r, double v)
{
    r->rlim_cur = r->rlim_max = (rlim_t)v;
}

static void kill_run(pid_t pid)
{
    kill(-pid, SIGKILL); /* the process group (no PID namespace: the only handle) */
    kill(pid, SIGKILL);  /* PID 1 of its namespace: the kernel kills the rest */
}

void aha_sandbox_result_free(aha_sandbox_result *r)
{
    free(r->out);
    r->out = NULL;
    r->out_len = 0;
}

aha_status aha_sandbox_run(aha_sandbox *sb, const char *const *argv, const void *in,
                           size_t in_len, double cpu_s, double wall_s, aha_sandbox_result *r,
                           aha_err *err)
{
    memset(r, 0, sizeof *r);
    const aha_sandbox_opts *o = &sb->o;
    if (cpu_s <= 0) cpu_s = o->cpu_s;
    if (wall_s <= 0) wall_s = o->wall_s;
    size_t cap = o->max_output;
    r->out = malloc(cap + 1);
    if (!r->out) return aha_errf(err, AHA_ENOMEM, "sandbox: out of memory");
    r->out[0] = 0;

    int pout[2] = {-1, -1}, perr[2] = {-1, -1}, prep[2] = {-1, -1};
    int memfd = (int)syscall(SYS_memfd_create, "aha-sandbox-stdin", MFD_CLOEXEC);
    aha_status st = AHA_OK;
    if (memfd < 0 || pipe2(pout, O_CLOEXEC) != 0 || pipe2(perr, O_CLOEXEC) != 0 ||
        pipe2(prep, O_CLOEXEC) != 0) {
        st = aha_errf(err, AHA_EIO, "sandbox: pipes: %s", strerror(errno));
        goto out_fds;
    }
    for (size_t done = 0; done < in_len;) {
        ssize_t w = write(memfd, (const char *)in + done, in_len - done);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            st = aha_errf(err, AHA_EIO, "sandbox: stdin: %s", strerror(errno));
            goto out_fds;
        }
        done += (size_t)w;
    }
    lseek(memfd, 0, SEEK_SET);

    child_args ca = {
        .argv = argv, .envp = sb->envp, .dir = sb->dir,
        .in_fd = memfd, .out_fd = pout[1], .err_fd = perr[1], .rep_fd = prep[1],
        .userns = (g_ns_flags & CLONE_NEWUSER) != 0,
        .uid_map = sb->uid_map, .gid_map = sb->gid_map,
        .drop = sb->drop, .uid = sb->uid,
        .ll_abi = g_ll_abi, .fprog = &g_fprog,
    };
    /* Whole seconds, rounded up; soft = hard, so the kernel sends SIGKILL (SIGXCPU could be
     * caught or ignored). */
    set_rlim(&ca.lim_cpu, ceil(cpu_s < 1 ? 1 : cpu_s));
    set_rlim(&ca.lim_as, (double)o->mem_bytes);
    set_rlim(&ca.lim_fsize, (double)o->file_bytes);
    set_rlim(&ca.lim_nofile, o->nofile);
    long nproc = o->nproc;
    if (!sb->drop) nproc += tasks_of_uid(geteuid());
    set_rlim(&ca.lim_nproc, (double)nproc);

    double t0 = aha_now_s();
    long pid = syscall(SYS_clone, (unsigned long)(g_ns_flags | SIGCHLD), NULL, NULL, NULL, NULL);
    if (pid == 0) child_main(&ca);
    if (pid < 0) {
        st = aha_errf(err, AHA_EIO, "sandbox: clone: %s", strerror(errno));
        goto out_fds;
    }
    close(pout[1]);
    close(perr[1]);
    close(prep[1]);
    pout[1] = perr[1] = prep[1] = -1;
    fcntl(pout[0], F_SETFL, O_NONBLOCK);
    fcntl(perr[0], F_SETFL, O_NONBLOCK);
    fcntl(prep[0], F_SETFL, O_NONBLOCK);

    char rep[256];
    size_t rep_len = 0;
    size_t err_len = 0, err_cap = sizeof r->err - 1;
    bool out_open = true, err_open = true, rep_open = true;
    double deadline = t0 + wall_s;
    char buf[65536];
    while (out_open || err_open || rep_open) {
        double left = deadline - aha_now_s();
        if (left <= 0) {
            r->outcome = AHA_SANDBOX_TIMEOUT;
            break;
        }
        struct pollfd p[3] = {{pout[0], POLLIN, 0}, {perr[0], POLLIN, 0}, {prep[0], POLLIN, 0}};
        if (!out_open) p[0].fd = -1;
        if (!err_open) p[1].fd = -1;
        if (!rep_open) p[2].fd = -1;
        int pr = poll(p, 3, (int)(left * 1000) + 1);
        if (pr < 0 && errno != EINTR) {
            st = aha_errf(err, AHA_EIO, "sandbox: poll: %s", strerror(errno));
            break;
        }
        if (pr <= 0) continue;
        if (p[0].revents) {
            ssize_t n = read(pout[0], buf, sizeof buf);
            if (n > 0) {
                size_t take = (size_t)n;
                if (r->out_len + take > cap) take = cap - r->out_len;
                memcpy(r->out + r->out_len, buf, take);
                r->out_len += take;
                if (take < (size_t)n) {
                    r->outcome = AHA_SANDBOX_OUTPUT;
                    break;
                }
            } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
                out_open = false;
            }
        }
        if (p[1].revents) {
            ssize_t n = read(perr[0], buf, sizeof buf);
            if (n > 0) {
                /* keep the tail: the last line of a traceback says what went wrong */
                size_t nn = (size_t)n;
                const char *src = buf;
                if (nn >= err_cap) {
                    src = buf + nn - err_cap;
                    nn = err_cap;
                    err_len = 0;
                } else if (err_len + nn > err_cap) {
                    size_t drop = err_len + nn - err_cap;
                    memmove(r->err, r->err + drop, err_len - drop);
                    err_len -= drop;
                }
                memcpy(r->err + err_len, src, nn);
                err_len += nn;
            } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
                err_open = false;
            }
        }
        if (p[2].revents) {
            ssize_t n = read(prep[0], rep + rep_len, sizeof rep - 1 - rep_len);
            if (n > 0) rep_len += (size_t)n;
            else if (n == 0 || (errno != EAGAIN && errno != EINTR)) rep_open = false;
            if (rep_len == sizeof rep - 1) rep_open = false;
        }
    }
    r->out[r->out_len] = 0;
    r->err[err_len] = 0;
    kill_run((pid_t)pid);
    int status = 0;
    struct rusage ru;
    memset(&ru, 0, sizeof ru);
    while (wait4((pid_t)pid, &status, 0, &ru) < 0 && errno == EINTR) {
    }
    r->wall_s = aha_now_s() - t0;
    r->cpu_s = (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 +
               (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec * 1e-6;
    if (st == AHA_OK && rep_len > 0) {
        rep[rep_len] = 0;
        st = aha_errf(err, AHA_EINTERNAL, "sandbox: setting up %s: %s", argv[0], rep);
    }
    if (st == AHA_OK && r->outcome == AHA_SANDBOX_EXITED) {
        if (WIFSIGNALED(status)) {
            r->outcome = AHA_SANDBOX_SIGNALED;
            r->code = WTERMSIG(status);
            /* The kernel enforces the limit on its precise runtime, while rusage is sampled;
             * on a virtual machine it was seen 30 % low (0.72 s at a 1 s limit). A SIGKILL we
             * did not send after half the limit is the limit. */
            r->cpu_limit = (r->code == SIGKILL || r->code == SIGXCPU) &&
                           r->cpu_s >= (double)ca.lim_cpu.rlim_cur * 0.5;
        } else {
            r->code = WEXITSTATUS(status);
        }
    }
out_fds:
    for (int k = 0; k < 2; k++) {
        if (pout[k] >= 0) close(pout[k]);
        if (perr[k] >= 0) close(perr[k]);
        if (prep[k] >= 0) close(prep[k]);
    }
    if (memfd >= 0) close(memfd);
    if (st != AHA_OK) aha_sandbox_result_free(r);
    return st;
}

/* ------------------------------------------------------------------------------------ */
/* The code reward                                                                      */

aha_status aha_code_task_lang(const char *task, size_t len, aha_code_lang *lang, aha_err *err)
{
    *lang = AHA_CODE_NONE;
    if (len == 4 && memcmp(task, "code", 4) == 0) {
        *lang = AHA_CODE_PYTHON;
        return AHA_OK;
    }
    if (len < 5 || memcmp(task, "code:", 5) != 0) return AHA_OK;
    const char *l = task + 5;
    size_t n = len - 5;
    if ((n == 6 && memcmp(l, "python", 6) == 0) || (n == 2 && memcmp(l, "py", 2) == 0) ||
        (n == 7 && memcmp(l, "python3", 7) == 0))
        *lang = AHA_CODE_PYTHON;
    else if (n == 1 && l[0] == 'c')
        *lang = AHA_CODE_C;
    else
        return aha_errf(err, AHA_EINVAL, "task: unknown code language '%.*s' (python or c)",
                        (int)(n > 32 ? 32 : n), l);
    return AHA_OK;
}

static const char *mem_find(const char *h, size_t hn, const char *needle, size_t nn)
{
    if (nn == 0 || hn < nn) return NULL;
    for (size_t i = 0; i + nn <= hn; i++)
        if (h[i] == needle[0] && memcmp(h + i, needle, nn) == 0) return h + i;
    return NULL;
}

static const char *mem_rfind(const char *h, size_t hn, const char *needle, size_t nn)
{
    if (nn == 0 || hn < nn) return NULL;
    for (size_t i = hn - nn + 1; i-- > 0;)
        if (h[i] == needle[0] && memcmp(h + i, needle, nn) == 0) return h + i;
    return NULL;
}

static bool tag_is(const char *t, size_t n, aha_code_lang lang)
{
    if (lang == AHA_CODE_PYTHON)
        return (n == 6 && memcmp(t, "python", 6) == 0) || (n == 2 && memcmp(t, "py", 2) == 0) ||
               (n == 7 && memcmp(t, "python3", 7) == 0);
    return n == 1 && (t[0] == 'c' || t[0] == 'C');
}

/* Scan the fenced blocks of [s, s+n) in order; remember the last one tagged `lang` and the
 * last untagged one. A fence is ``` at the start of a line; an unclosed block runs to the
 * end. Linear in n. */
static bool find_block(const char *s, size_t n, aha_code_lang lang, size_t *off, size_t *len)
{
    bool have_tagged = false, have_plain = false;
    size_t t_off = 0, t_len = 0, p_off = 0, p_len = 0;
    size_t i = 0;
    while (i < n) {
        const char *f = mem_find(s + i, n - i, "```", 3);
        if (!f) break;
        size_t fi = (size_t)(f - s);
        if (fi > 0 && s[fi - 1] != '\n' && s[fi - 1] != '\r' && s[fi - 1] != ' ' &&
            s[fi - 1] != '>') {
            i = fi + 3;
            continue;
        }
        size_t t = fi + 3;
        while (t < n && (s[t] == ' ' || s[t] == '\t')) t++;
        size_t te = t;
        while (te < n && s[te] != '\n' && s[te] != '\r' && s[te] != ' ' && s[te] != '`') te++;
        size_t le = te;
        while (le < n && s[le] != '\n') le++;
        size_t body = le < n ? le + 1 : n;
        const char *close = mem_find(s + body, n - body, "```", 3);
        size_t bend = close ? (size_t)(close - s) : n;
        if (te == t) {
            have_plain = true;
            p_off = body;
            p_len = bend - body;
        } else if (tag_is(s + t, te - t, lang)) {
            have_tagged = true;
            t_off = body;
            t_len = bend - body;
        }
        i = close ? bend + 3 : n;
    }
    if (have_tagged) {
        *off = t_off;
        *len = t_len;
        return true;
    }
    if (have_plain) {
        *off = p_off;
        *len = p_len;
        return true;
    }
    return false;
}

bool aha_code_extract(const char *completion, size_t len, aha_code_lang lang, size_t *off,
                      size_t *n)
{
    const char *close = mem_rfind(completion, len, "</answer>", 9);
    if (close) {
        size_t ci = (size_t)(close - completion);
        const char *open = mem_rfind(completion, ci, "<answer>", 8);
        if (open) {
            size_t oi = (size_t)(open - completion) + 8;
            if (find_block(completion + oi, ci - oi, lang, off, n)) {
                *off += oi;
                return true;
            }
        }
    }
    return find_block(completion, len, lang, off, n);
}

static bool is_trail_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

/* The next line of [s, e) from *p with trailing whitespace removed: [*ls, *ll). */
static bool next_line(const char *s, size_t n, size_t *p, size_t *ls, size_t *ll)
{
    if (*p >= n) return false;
    size_t a = *p, b = a;
    while (b < n && s[b] != '\n') b++;
    *p = b < n ? b + 1 : n;
    size_t z = b;
    while (z > a && is_trail_space(s[z - 1])) z--;
    *ls = a;
    *ll = z - a;
    return true;
}

/* Length of s without trailing blank lines (lines of only whitespace) and whitespace. */
static size_t trim_end(const char *s, size_t n)
{
    while (n > 0 && (is_trail_space(s[n - 1]) || s[n - 1] == '\n')) n--;
    return n;
}

bool aha_code_output_equal(const char *a, size_t alen, const char *b, size_t blen)
{
    alen = trim_end(a, alen);
    blen = trim_end(b, blen);
    size_t pa = 0, pb = 0;
    for (;;) {
        size_t as, al, bs, bl;
        bool ha = next_line(a, alen, &pa, &as, &al);
        bool hb = next_line(b, blen, &pb, &bs, &bl);
        if (!ha || !hb) return ha == hb;
        if (al != bl || memcmp(a + as, b + bs, al) != 0) return false;
    }
}

/* A short printable quote of s for a reason string. */
static void quote(char *dst, size_t cap, const char *s, size_t n)
{
    size_t k = 0, i = 0;
    for (; i < n && k + 6 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\n') {
            dst[k++] = '\\';
            dst[k++] = 'n';
        } else {
            dst[k++] = (c < 0x20 || c >= 0x7f) ? '?' : (char)c;
        }
    }
    if (i < n) {
        memcpy(dst + k, "...", 3);
        k += 3;
    }
    dst[k] = 0;
}

/* The last non-empty line of a stderr tail (a traceback's exception, a compiler's error). */
static void last_line(const char *s, char *dst, size_t cap)
{
    size_t n = strlen(s);
    n = trim_end(s, n);
    size_t a = n;
    while (a > 0 && s[a - 1] != '\n') a--;
    quote(dst, cap, s + a, n - a);
}

/* The first line of a compiler's output that says "error", else its last line. */
static void error_line(const char *s, char *dst, size_t cap)
{
    const char *e = strstr(s, "error");
    if (!e) {
        last_line(s, dst, cap);
        return;
    }
    const char *a = e;
    while (a > s && a[-1] != '\n') a--;
    const char *z = strchr(e, '\n');
    size_t n = z ? (size_t)(z - a) : strlen(a);
    quote(dst, cap, a, n);
}

/* A reason string: cut at cap on purpose (a reason is a hint, the stderr line may be long). */
static void __attribute__((format(printf, 3, 4))) reason_fmt(char *dst, size_t cap,
                                                             const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(dst, cap, fmt, ap);
    va_end(ap);
}

/* Why a run did not produce a usable result, or "" when it exited 0. */
static void run_failure(const aha_sandbox_result *r, const aha_sandbox_opts *o, double cpu_s,
                        double wall_s, char *dst, size_t cap)
{
    char line[160];
    switch (r->outcome) {
    case AHA_SANDBOX_TIMEOUT:
        snprintf(dst, cap, "wall-clock limit of %g s exceeded", wall_s);
        return;
    case AHA_SANDBOX_OUTPUT:
        snprintf(dst, cap, "output limit of %zu bytes exceeded", o->max_output);
        return;
    case AHA_SANDBOX_SIGNALED:
        if (r->cpu_limit) snprintf(dst, cap, "CPU time limit of %g s exceeded", cpu_s);
        else snprintf(dst, cap, "killed by signal %d (%s)", r->code, strsignal(r->code));
        return;
    case AHA_SANDBOX_EXITED:
        if (r->code == 0) {
            dst[0] = 0;
            return;
        }
        last_line(r->err, line, sizeof line);
        reason_fmt(dst, cap, "exit status %d%s%s", r->code, line[0] ? ": " : "", line);
        return;
    }
}

aha_status aha_code_score(const aha_sandbox_opts *o, aha_code_lang lang, const char *completion,
                          size_t len, const char *tests, size_t tests_len, aha_code_verdict *v,
                          aha_err *err)
{
    memset(v, 0, sizeof *v);
    if (lang != AHA_CODE_PYTHON && lang != AHA_CODE_C)
        return aha_errf(err, AHA_EINVAL, "code reward: no language");
    json_error_t jerr;
    json_t *cases = json_loadb(tests, tests_len, JSON_REJECT_DUPLICATES, &jerr);
    if (!cases)
        return aha_errf(err, AHA_EINVAL, "reference_answer: test cases are not JSON: %s",
                        jerr.text);
    aha_status st = AHA_OK;
    aha_sandbox *sb = NULL;
    size_t nc = json_is_array(cases) ? json_array_size(cases) : 0;
    if (!json_is_array(cases) || nc == 0 || nc > (size_t)o->max_cases) {
        st = aha_errf(err, AHA_EINVAL,
                      "reference_answer: expected a JSON array of 1 to %d test cases "
                      "[{\"input\": \"...\", \"output\": \"...\"}]",
                      o->max_cases);
        goto out;
    }
    for (size_t i = 0; i < nc; i++) {
        json_t *c = json_array_get(cases, i);
        const char *key;
        json_t *val;
        if (!json_is_object(c)) {
            st = aha_errf(err, AHA_EINVAL, "reference_answer: test case %zu is not an object",
                          i + 1);
            goto out;
        }
        json_object_foreach(c, key, val)
        {
            if ((strcmp(key, "input") != 0 && strcmp(key, "output") != 0) ||
                !json_is_string(val)) {
                st = aha_errf(err, AHA_EINVAL,
                              "reference_answer: test case %zu: '%.40s' is not \"input\" or "
                              "\"output\" with a string value",
                              i + 1, key);
                goto out;
            }
        }
        if (!json_object_get(c, "output")) {
            st = aha_errf(err, AHA_EINVAL, "reference_answer: test case %zu has no \"output\"",
                          i + 1);
            goto out;
        }
    }
    v->cases_total = (int)nc;
    const char *lname = lang == AHA_CODE_PYTHON ? "python" : "c";
    size_t poff, plen;
    if (!aha_code_extract(completion, len, lang, &poff, &plen)) {
        snprintf(v->reason, sizeof v->reason, "no ```%s block in the completion", lname);
        goto out;
    }
    st = aha_sandbox_create(o, &sb, err);
    if (st != AHA_OK) goto out;
    const char *src = lang == AHA_CODE_PYTHON ? "prog.py" : "prog.c";
    st = aha_sandbox_write(sb, src, completion + poff, plen, err);
    if (st != AHA_OK) goto out;
    aha_sandbox_result r;
    char why[200];
    char exe[600];
    const char *argv_py[] = {o->python, "-I", "-B", "prog.py", NULL};
    snprintf(exe, sizeof exe, "%s/prog", aha_sandbox_dir(sb));
    const char *argv_c[] = {exe, NULL};
    const char *const *argv = argv_py;
    if (lang == AHA_CODE_C) {
        const char *cc[] = {o->cc, "-O1", "-std=gnu11", "-w", "-o", "prog", "prog.c", "-lm", NULL};
        st = aha_sandbox_run(sb, cc, NULL, 0, o->compile_cpu_s, o->compile_wall_s, &r, err);
        if (st != AHA_OK) goto out;
        run_failure(&r, o, o->compile_cpu_s, o->compile_wall_s, why, sizeof why);
        if (why[0]) {
            char line[160];
            error_line(r.err, line, sizeof line);
            reason_fmt(v->reason, sizeof v->reason, "compile error: %s%s%s", why,
                       line[0] ? ": " : "", line);
            aha_sandbox_result_free(&r);
            goto out;
        }
        aha_sandbox_result_free(&r);
        argv = argv_c;
    }
    for (size_t i = 0; i < nc; i++) {
        json_t *c = json_array_get(cases, i);
        json_t *jin = json_object_get(c, "input"), *jout = json_object_get(c, "output");
        const char *in = jin ? json_string_value(jin) : "";
        size_t in_len = jin ? json_string_length(jin) : 0;
        st = aha_sandbox_run(sb, argv, in, in_len, 0, 0, &r, err);
        if (st != AHA_OK) goto out;
        run_failure(&r, o, o->cpu_s, o->wall_s, why, sizeof why);
        if (why[0]) {
            snprintf(v->reason, sizeof v->reason, "case %zu/%zu: %s", i + 1, nc, why);
            aha_sandbox_result_free(&r);
            goto out;
        }
        if (!aha_code_output_equal(r.out, r.out_len, json_string_value(jout),
                                   json_string_length(jout))) {
            char want[64], got[64];
            quote(want, sizeof want, json_string_value(jout), json_string_length(jout));
            quote(got, sizeof got, r.out, r.out_len);
            snprintf(v->reason, sizeof v->reason,
                     "case %zu/%zu: wrong output: expected \"%s\", got \"%s\"", i + 1, nc, want,
                     got);
            aha_sandbox_result_free(&r);
            goto out;
        }
        aha_sandbox_result_free(&r);
        v->cases_passed++;
    }
    v->passed = true;
    snprintf(v->reason, sizeof v->reason, "passed %zu/%zu cases", nc, nc);
out:
    aha_sandbox_free(sb);
    json_decref(cases);
    return st;
}
