/* pool.c — graft's own thread pool: fork-join over a fixed set of workers, used by the GEMM (gemm.c)
 * and by the generated kernels' parallel loops. One pool per process, started on first use with
 * gr_set_threads' count (default: the CPUs this process may run on).
 *
 * gr_parallel(fn, ctx, parts) runs fn(ctx, p, parts) for every p < parts and returns when all are
 * done; the calling thread takes parts too. Parts are handed out by an atomic counter, so which
 * thread runs a part never changes a result: callers split work so that every output element is
 * computed by exactly one part, in a fixed order. Between jobs the workers spin briefly (steps
 * follow one another closely) and then sleep on a futex, so an idle process uses no CPU. A call
 * from inside a part runs its parts inline: nesting never deadlocks. */
#define _GNU_SOURCE
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <cblas.h>
#include "runtime/runtime.h"

#define GR_POOL_MAX 256
#define GR_SPIN 20000         /* pause loops before a worker sleeps: about 0.1-1 ms */
#define GR_PAR_MIN_WORK 32768 /* elements: below this a loop runs in the calling thread */

static struct {
  pthread_mutex_t lock; /* starts workers and serialises jobs from different threads */
  _Atomic int want;     /* the thread count asked for (0: every CPU); read on every job, lock-free */
  int started;
  _Atomic uint32_t gen;  /* the job's number, bumped for each job; workers futex-wait on it */
  _Atomic int sleepers;  /* workers in (or about to enter) futex_wait: a job wakes them only then */
  _Atomic uint64_t next; /* the job's number << 32 | the next part to hand out */
  _Atomic int64_t done, parts;
  _Atomic(gr_task_fn) fn;
  _Atomic(void *) ctx;
} pool = {.lock = PTHREAD_MUTEX_INITIALIZER};

static _Thread_local int in_part;

static void futex_wait(_Atomic uint32_t *a, uint32_t v) { syscall(SYS_futex, a, FUTEX_WAIT_PRIVATE, v, NULL, NULL, 0); }
static void futex_wake(_Atomic uint32_t *a) { syscall(SYS_futex, a, FUTEX_WAKE_PRIVATE, INT32_MAX, NULL, NULL, 0); }
static void cpu_relax(void) { __builtin_ia32_pause(); }

/* Takes parts of job g until none are left. A worker that wakes late may read a later job's fields;
 * its claim then fails on the job number, so it never runs a part it did not read the job of. */
static void run_parts(uint32_t g) {
  gr_task_fn fn = atomic_load_explicit(&pool.fn, memory_order_relaxed);
  void *ctx = atomic_load_explicit(&pool.ctx, memory_order_relaxed);
  int64_t parts = atomic_load_explicit(&pool.parts, memory_order_relaxed);
  uint64_t cur = atomic_load_explicit(&pool.next, memory_order_acquire);
  in_part = 1;
  while ((uint32_t)(cur >> 32) == g && (int64_t)(cur & 0xffffffffu) < parts) {
    if (!atomic_compare_exchange_weak_explicit(&pool.next, &cur, cur + 1, memory_order_acq_rel, memory_order_acquire)) continue;
    fn(ctx, (int64_t)(cur & 0xffffffffu), parts);
    atomic_fetch_add_explicit(&pool.done, 1, memory_order_release);
    cur = atomic_load_explicit(&pool.next, memory_order_acquire);
  }
  in_part = 0;
}

static void *worker(void *arg) {
  uint32_t seen = (uint32_t)(uintptr_t)arg;
  for (;;) {
    uint32_t g;
    int spin = 0;
    while ((g = atomic_load_explicit(&pool.gen, memory_order_acquire)) == seen) {
      if (++spin < GR_SPIN) {
        cpu_relax();
      } else {
        /* counted before the wait: a job started after the count is seen by futex_wait's own check */
        atomic_fetch_add(&pool.sleepers, 1);
        futex_wait(&pool.gen, seen);
        atomic_fetch_sub(&pool.sleepers, 1);
      }
    }
    seen = g;
    run_parts(g);
  }
  return NULL;
}

static int online_cpus(void) {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0) return CPU_COUNT(&set) > 0 ? CPU_COUNT(&set) : 1;
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? (int)n : 1;
}

void gr_set_threads(int n) {
  atomic_store(&pool.want, n > 0 ? (n < GR_POOL_MAX ? n : GR_POOL_MAX) : 0);
  /* OpenBLAS serves the f64 GEMMs and machines without AVX-512 */
  if (n > 0) openblas_set_num_threads(n);
}

int gr_threads(void) {
  int n = atomic_load_explicit(&pool.want, memory_order_relaxed);
  if (n) return n;
  static _Atomic int cpus; /* counted once */
  if (!(n = atomic_load_explicit(&cpus, memory_order_relaxed))) atomic_store(&cpus, n = online_cpus());
  return n;
}

/* Starts workers up to the thread count - 1, under the lock (a pool never shrinks; a smaller count
 * just uses fewer parts). */
static void start_workers(void) {
  while (pool.started < gr_threads() - 1) {
    pthread_t t;
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    int rc = pthread_create(&t, &at, worker, (void *)(uintptr_t)atomic_load(&pool.gen));
    pthread_attr_destroy(&at);
    if (rc != 0) break; /* fewer workers: the caller runs the remaining parts itself */
    pool.started++;
  }
}

void gr_parallel(gr_task_fn fn, void *ctx, int64_t parts) {
  bool pooled = parts > 1 && !in_part;
  if (pooled) {
    pthread_mutex_lock(&pool.lock);
    start_workers();
    if (pool.started == 0) pthread_mutex_unlock(&pool.lock), pooled = false;
  }
  if (!pooled) { /* one part, a nested call, or no worker could be started: in this thread */
    for (int64_t p = 0; p < parts; p++) fn(ctx, p, parts);
    return;
  }
  uint32_t g = atomic_load_explicit(&pool.gen, memory_order_relaxed) + 1;
  atomic_store_explicit(&pool.fn, fn, memory_order_relaxed);
  atomic_store_explicit(&pool.ctx, ctx, memory_order_relaxed);
  atomic_store_explicit(&pool.parts, parts, memory_order_relaxed);
  atomic_store_explicit(&pool.done, 0, memory_order_relaxed);
  atomic_store_explicit(&pool.next, (uint64_t)g << 32, memory_order_release);
  atomic_store(&pool.gen, g);
  if (atomic_load(&pool.sleepers) > 0) futex_wake(&pool.gen); /* a system call: only when someone sleeps */
  run_parts(g);
  for (int spin = 0; atomic_load_explicit(&pool.done, memory_order_acquire) < parts; spin++) {
    if (spin < GR_SPIN) cpu_relax();
    else sched_yield(); /* a worker holding a part lost its CPU (more threads than cores) */
  }
  pthread_mutex_unlock(&pool.lock);
}

void gr_parallel_for(gr_task_fn fn, void *ctx, int64_t count, int64_t cost) {
  int64_t parts = gr_threads();
  if (parts > count) parts = count;
  if (count * cost < GR_PAR_MIN_WORK) parts = 1; /* not worth a wake-up */
  gr_parallel(fn, ctx, parts);
}
