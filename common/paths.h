/*
 * paths.h — finding files that ship with Tessera (the bundled model, vocabularies).
 *
 * The product runs from a build tree (build/bin/tessera) or an install prefix (bin/tessera next
 * to share/tessera/). ts_find_data_file looks for a relative path such as
 * "models/stories260K/stories260K-f32.gguf" in, in order: $TESSERA_HOME, the directories above
 * the running executable (build/bin/ → the source root), <prefix>/share/tessera, and the current
 * directory. It returns 0 and the absolute path, or TS_E_NOT_FOUND naming the places it looked.
 */
#ifndef TS_COMMON_PATHS_H
#define TS_COMMON_PATHS_H

#include <stddef.h>

int ts_find_data_file(const char *relative, char *out, size_t out_size);

/* The bundled default model, relative to the data root. */
#define TS_DEFAULT_MODEL "models/stories260K/stories260K-f32.gguf"

#endif
