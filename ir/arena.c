/* arena.c — chunked bump allocation; see arena.h. Large requests get a chunk of their own. */
#include "ir/arena.h"
#include "ir/diag.h"
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct gr_arena_chunk {
  gr_arena_chunk *next;
  size_t used, size;
  _Alignas(16) unsigned char data[];
};

enum { CHUNK = 64 * 1024 };

void gr_arena_init(gr_arena *a) { a->head = NULL; }

void gr_arena_free(gr_arena *a) {
  for (gr_arena_chunk *c = a->head, *n; c; c = n) {
    n = c->next;
    free(c);
  }
  a->head = NULL;
}

void *gr_alloc(gr_arena *a, size_t bytes) {
  bytes = (bytes + 15) & ~(size_t)15;
  gr_arena_chunk *c = a->head;
  if (!c || c->size - c->used < bytes) {
    size_t size = bytes > CHUNK / 4 ? bytes : CHUNK;
    c = malloc(sizeof *c + size);
    GR_CHECK(c != NULL, "out of memory allocating %zu bytes", size);
    c->used = 0;
    c->size = size;
    if (size == bytes && a->head) { /* keep filling the current chunk afterwards */
      c->next = a->head->next;
      a->head->next = c;
    } else {
      c->next = a->head;
      a->head = c;
    }
  }
  void *p = c->data + c->used;
  c->used += bytes;
  memset(p, 0, bytes);
  return p;
}

char *gr_strndup(gr_arena *a, const char *s, size_t n) {
  char *d = gr_alloc(a, n + 1);
  memcpy(d, s, n);
  d[n] = 0;
  return d;
}

char *gr_strdup(gr_arena *a, const char *s) { return s ? gr_strndup(a, s, strlen(s)) : NULL; }

char *gr_sprintf(gr_arena *a, const char *fmt, ...) {
  va_list ap, ap2;
  va_start(ap, fmt);
  va_copy(ap2, ap);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  char *s = gr_alloc(a, (size_t)n + 1);
  vsnprintf(s, (size_t)n + 1, fmt, ap2);
  va_end(ap2);
  return s;
}

void gr_grow(gr_arena *a, void **arr, int *cap, int need, size_t elem) {
  if (need <= *cap) return;
  int ncap = *cap ? *cap * 2 : 16;
  while (ncap < need) ncap *= 2;
  void *n = gr_alloc(a, (size_t)ncap * elem);
  if (*arr) memcpy(n, *arr, (size_t)*cap * elem);
  *arr = n;
  *cap = ncap;
}
