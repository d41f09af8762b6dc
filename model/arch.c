/* arch.c — the table of architectures (model/arch.h); each one is defined in its own file. */
#include "model/arch.h"

#include <string.h>

static const ts_arch *const all[] = {&ts_arch_llama, &ts_arch_qwen2};

const ts_arch *ts_arch_find(const char *name, size_t len) {
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (strlen(all[i]->name) == len && memcmp(all[i]->name, name, len) == 0) return all[i];
    return NULL;
}

const char *ts_arch_names(void) {
    return "llama, qwen2";
}
