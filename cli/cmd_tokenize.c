/* cmd_tokenize.c — placeholder until the command lands; it fails honestly instead of pretending. */
#include "cli/commands.h"
#include "common/error.h"

int ts_cmd_tokenize(int argc, char **argv) {
    ts_error_set(TS_E_UNSUPPORTED, "not implemented yet");
    return ts_cli_fail("tokenize", TS_EXIT_FAILURE);
}
