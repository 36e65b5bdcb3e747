/* spawn.h: start an aha service binary on a free loopback port for a C integration test
 * (it announces "listening on port N" on stdout), and stop it with SIGTERM. */
#ifndef AHA_TESTS_SPAWN_H
#define AHA_TESTS_SPAWN_H

#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/fs.h"

typedef struct {
    pid_t pid;
    int port;
} th_service;

/* argv: NULL-terminated, argv[0] = the binary; "--listen LISTEN" is appended (port 0: any
 * free port). Returns the port the service announced, 0 when it did not within 30 s. */
static inline int th_spawn_listen(th_service *s, char *const *argv, const char *listen)
{
    int fd[2];
    s->port = 0;
    s->pid = -1;
    if (pipe(fd) != 0) return 0;
    int n = 0;
    while (argv[n]) n++;
    char **av = calloc((size_t)n + 3, sizeof *av);
    for (int i = 0; i < n; i++) av[i] = argv[i];
    av[n] = "--listen";
    av[n + 1] = (char *)listen;
    s->pid = fork();
    if (s->pid == 0) {
        dup2(fd[1], 1);
        close(fd[0]);
        close(fd[1]);
        execv(av[0], av);
        _exit(127);
    }
    free(av);
    close(fd[1]);
    char line[512];
    size_t len = 0;
    double end = aha_now_s() + 30;
    while (aha_now_s() < end && len < sizeof line - 1) {
        struct pollfd p = {fd[0], POLLIN, 0};
        if (poll(&p, 1, 100) <= 0) continue;
        char ch;
        if (read(fd[0], &ch, 1) != 1) break;
        if (ch != '\n') {
            line[len++] = ch;
            continue;
        }
        line[len] = 0;
        const char *k = strstr(line, "listening on port ");
        if (k) {
            s->port = atoi(k + strlen("listening on port "));
            break;
        }
        len = 0;
    }
    close(fd[0]);
    return s->port;
}

/* th_spawn_listen on any free loopback port. */
static inline int th_spawn(th_service *s, char *const *argv)
{
    return th_spawn_listen(s, argv, "127.0.0.1:0");
}

/* SIGTERM, wait up to 10 s (then SIGKILL); returns the exit status (128+sig if killed). */
static inline int th_stop(th_service *s)
{
    if (s->pid <= 0) return -1;
    kill(s->pid, SIGTERM);
    int status = 0;
    for (int i = 0; i < 500; i++) {
        if (waitpid(s->pid, &status, WNOHANG) == s->pid)
            return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        usleep(20000);
    }
    kill(s->pid, SIGKILL);
    waitpid(s->pid, &status, 0);
    return 128 + SIGKILL;
}

#endif
