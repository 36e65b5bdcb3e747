/* ranks.h: run a function as W forked rank processes on loopback (the dist tests). Each
 * child runs fn(rank, world, rendezvous, arg) and exits with 1 when any of its CHECKs failed;
 * an alarm kills a child that would hang, so a broken timeout path fails the test instead of
 * stalling it. */
#ifndef AHA_TESTS_DIST_RANKS_H
#define AHA_TESTS_DIST_RANKS_H

#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../../harness.h"

/* a loopback port nobody listens on right now */
static inline int rk_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
        perror("free port");
        exit(1);
    }
    close(fd);
    return ntohs(a.sin_port);
}

typedef void (*rk_fn)(int rank, int world, const char *rendezvous, void *arg);

/* Runs ranks 0 .. n_start-1 of a world of `world` (n_start < world leaves ranks missing).
 * Returns the number of children that failed. */
static inline int rk_run(int world, int n_start, rk_fn fn, void *arg, int alarm_s)
{
    char rdv[64];
    snprintf(rdv, sizeof rdv, "127.0.0.1:%d", rk_free_port());
    pid_t pids[16];
    fflush(stderr);
    for (int r = 0; r < n_start; r++) {
        pids[r] = fork();
        if (pids[r] < 0) {
            perror("fork");
            exit(1);
        }
        if (pids[r] == 0) {
            alarm((unsigned)alarm_s);
            fn(r, world, rdv, arg);
            fflush(stderr);
            _exit(th_failures ? 1 : 0);
        }
    }
    int bad = 0;
    for (int r = 0; r < n_start; r++) {
        int status = 0;
        waitpid(pids[r], &status, 0);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            fprintf(stderr, "  rank %d of %d: %s %d\n", r, world, WIFEXITED(status) ? "exit" : "signal",
                    WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
            bad++;
        }
    }
    return bad;
}

#endif
