/* api.h — the parts of the embedding API (include/graft.h) that its two openers share: api.c makes a
 * graft_model around a compiled run; graft_open_artifact (api.c) gets the run from a generated
 * library, graft_open_plan (compiler/api_plan.c) from compiling a plan. */
#ifndef GRAFT_API_H
#define GRAFT_API_H
#include "graft.h"
#include "runtime/runtime.h"

/* A model with diagnostics going where opts says (NULL: stderr), no run yet; NULL if out of memory. */
graft_model *gr_api_new(const graft_options *opts);
gr_diag *gr_api_diag(graft_model *m);
/* Starts training state for run: owner (freed with free_owner on graft_close) keeps the run's models
 * alive; the session is initialised from the run's seed, then `init` (a parameter image of the first
 * phase's slab, NULL: none) copied over it. */
graft_status gr_api_start(graft_model *m, const gr_run *run, void *owner, void (*free_owner)(void *), const uint8_t *init,
                          size_t init_size);
gr_session *gr_api_session(graft_model *m);
/* The end of an opener: on failure (st not GRAFT_OK) m is closed and *out set to NULL; returns st. */
graft_status gr_api_opened(graft_model *m, graft_status st, graft_model **out);

#endif
