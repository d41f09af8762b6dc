/* paths.c — see paths.h. */
#include "common/paths.h"

#include "common/error.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int try_path(const char *dir, const char *relative, char *out, size_t out_size) {
    char candidate[PATH_MAX];
    snprintf(candidate, sizeof candidate, "%s/%s", dir, relative);
    if (access(candidate, R_OK) != 0) return 0;
    char *resolved = realpath(candidate, NULL);
    if (!resolved) return 0;
    snprintf(out, out_size, "%s", resolved);
    free(resolved);
    return 1;
}

int ts_find_data_file(const char *relative, char *out, size_t out_size) {
    const char *home = getenv("TESSERA_HOME");
    if (home && home[0] && try_path(home, relative, out, out_size)) return TS_OK;
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = '\0';
        /* walk up from the executable's directory: build/bin → build → source root */
        char *slash = strrchr(exe, '/');
        for (int up = 0; slash && up < 4; up++) {
            *slash = '\0';
            if (try_path(exe, relative, out, out_size)) return TS_OK;
            char share[PATH_MAX];
            snprintf(share, sizeof share, "%s/share/tessera", exe);
            if (try_path(share, relative, out, out_size)) return TS_OK;
            slash = strrchr(exe, '/');
        }
    }
    if (try_path(".", relative, out, out_size)) return TS_OK;
    return ts_error_set(TS_E_NOT_FOUND,
                        "%s: not found under $TESSERA_HOME, the directories above the tessera "
                        "executable, <prefix>/share/tessera or the current directory",
                        relative);
}
