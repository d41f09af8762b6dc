/*
 * process.h — starting the CLI's child processes (tessera up's coordinator and node groups,
 * tessera batch run's local cluster).
 *
 * A child runs in its own process group (the terminal's Ctrl-C reaches only its parent, which
 * then stops it in order) with SIGKILL as its parent-death signal, so that a `kill -9` of the
 * parent takes its children with it: PR_SET_PDEATHSIG fires when the spawning thread ends, so
 * call it from the thread that lives as long as the process (main). A fork after gRPC has
 * started is safe because the child at once execs (NOTES.md: a forked process that uses gRPC
 * hangs).
 */
#ifndef TS_CLI_PROCESS_H
#define TS_CLI_PROCESS_H

#include <sys/types.h>

/* Starts argv (argv[0] a path, or a name searched in PATH) as `name` (for messages). out_fd >= 0
 * becomes its stdout and stderr; -1 keeps ours. 0 and *pid, or TS_E_IO naming what failed
 * (exec included: it comes back through a close-on-exec pipe). */
int ts_cli_spawn(const char *name, char *const argv[], int out_fd, pid_t *pid);

/* Stops a child: SIGTERM, then SIGKILL after grace_ms; waits for it. Its exit status (as
 * waitpid's), or -1 when it was not ours. */
int ts_cli_stop_child(pid_t pid, int grace_ms);

#endif
