/*
 * process.c — see process.h.
 */
#include "cli/process.h"

#include "common/clock.h"
#include "common/error.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

/* The path execv needs for `file`, searched in PATH here, before fork (the child may only make
 * async-signal-safe calls: by a restart this process has gRPC threads). */
static int resolve_path(const char *file, char *out, size_t size) {
    if (strchr(file, '/')) {
        snprintf(out, size, "%s", file);
        return TS_OK;
    }
    const char *path = getenv("PATH");
    for (const char *p = path ? path : "/usr/bin:/bin"; *p;) {
        size_t len = strcspn(p, ":");
        if (len > 0 && (size_t)snprintf(out, size, "%.*s/%s", (int)len, p, file) < size &&
            access(out, X_OK) == 0)
            return TS_OK;
        p += len + (p[len] == ':');
    }
    return ts_error_set(TS_E_IO, "%s is not on PATH", file);
}

/* The getppid() check closes the race of a parent that died between fork and
 * prctl. mpirun's ranks have process groups of their own and do not inherit the setting, so the
 * nodes arm it themselves (--die-with-parent, topology/node_command.h): a rank ends with its
 * mpirun (without it, about a second later, when its connection to mpirun's PMIx server breaks;
 * up_supervision checks the whole tree). An exec failure comes back through a close-on-exec
 * pipe. */
int ts_cli_spawn(const char *name, char *const argv[], int out_fd, pid_t *out) {
    char path[PATH_MAX];
    int rc = resolve_path(argv[0], path, sizeof path);
    if (rc) return ts_error_wrap(rc, "cannot start %s", name);
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0)
        return ts_error_set(TS_E_IO, "cannot start %s: pipe: %s", name, strerror(errno));
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0) {
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        setpgid(0, 0);
        if (out_fd >= 0 && (dup2(out_fd, STDOUT_FILENO) < 0 || dup2(out_fd, STDERR_FILENO) < 0))
            _exit(127);
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent) _exit(127);
        execv(path, argv);
        int err = errno;
        ssize_t w = write(fds[1], &err, sizeof err);
        (void)w;
        _exit(127);
    }
    close(fds[1]);
    if (pid < 0) {
        close(fds[0]);
        return ts_error_set(TS_E_IO, "cannot start %s: fork: %s", name, strerror(errno));
    }
    setpgid(pid, pid); /* also here, so that a signal to the group right away reaches it */
    int err = 0;
    ssize_t got;
    do
        got = read(fds[0], &err, sizeof err);
    while (got < 0 && errno == EINTR);
    close(fds[0]);
    if (got == (ssize_t)sizeof err) {
        waitpid(pid, NULL, 0);
        return ts_error_set(TS_E_IO, "cannot start %s (%s): %s", name, path, strerror(err));
    }
    *out = pid;
    return TS_OK;
}

int ts_cli_stop_child(pid_t pid, int grace_ms) {
    int status = 0;
    kill(pid, SIGTERM);
    for (int waited = 0;; waited += 50) {
        pid_t got = waitpid(pid, &status, WNOHANG);
        if (got == pid) return status;
        if (got < 0 && errno != EINTR) return -1;
        if (waited >= grace_ms) break;
        ts_sleep_ms(50);
    }
    kill(pid, SIGKILL);
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) return -1;
    return status;
}
