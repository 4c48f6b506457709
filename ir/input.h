/* input.h — opening an input file (YAML, IDX, safetensors) the one way graft does it. */
#ifndef GRAFT_INPUT_H
#define GRAFT_INPUT_H
#include <sys/stat.h>
#include "ir/diag.h"

/* Opens `path` for reading and returns the descriptor, or -1 after reporting why (a directory is
 * refused). Without a location in `from` the error reads `path: error: cannot open: REASON`; with
 * one — where another file named this one — it reads `from: error: cannot open WHAT 'path': REASON`.
 * `st` (may be NULL) receives the file's status. */
int gr_open_input(gr_diag *d, const char *path, gr_loc from, const char *what, struct stat *st);

#endif
