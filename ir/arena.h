/* arena.h — the compile context's memory: a bump allocator that hands out zeroed, aligned blocks and
 * frees them all at once. Passes allocate from it and never call free(), so a failed compile cannot leak. */
#ifndef GRAFT_ARENA_H
#define GRAFT_ARENA_H
#include <stddef.h>

typedef struct gr_arena_chunk gr_arena_chunk;
typedef struct gr_arena {
  gr_arena_chunk *head; /* newest chunk first */
} gr_arena;

void gr_arena_init(gr_arena *a);
void gr_arena_free(gr_arena *a);
void *gr_alloc(gr_arena *a, size_t bytes);            /* zeroed, 16-byte aligned; aborts on OOM */
char *gr_strdup(gr_arena *a, const char *s);
char *gr_strndup(gr_arena *a, const char *s, size_t n);
char *gr_sprintf(gr_arena *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Grows *arr (of *cap elements of size elem) to hold at least need elements; old storage stays in the arena. */
void gr_grow(gr_arena *a, void **arr, int *cap, int need, size_t elem);

#endif
