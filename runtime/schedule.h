/* schedule.h — learning-rate schedules. Plain data filled by the plan frontend; evaluated by the
 * runtime before every step (the learning rate is a run-time scalar of the compiled step, so a
 * schedule never recompiles anything). */
#ifndef GRAFT_SCHEDULE_H
#define GRAFT_SCHEDULE_H
#include <stdbool.h>
#include <stdint.h>

typedef enum { GR_SCHED_CONSTANT, GR_SCHED_STEP, GR_SCHED_MULTISTEP, GR_SCHED_COSINE, GR_SCHED_DANN, GR_SCHED_COUNT } gr_sched_kind;
extern const char *const gr_sched_names[GR_SCHED_COUNT + 1];

enum { GR_SCHED_MAX_MILESTONES = 32 };

typedef struct gr_schedule {
  gr_sched_kind kind;
  bool per_step;        /* advance every optimizer step (true) or every epoch (false, PyTorch's usual) */
  int64_t step_size;    /* step: units between decays */
  double gamma;         /* step, multistep: decay factor */
  int n_milestones;     /* multistep: units at which to decay, increasing */
  int64_t milestones[GR_SCHED_MAX_MILESTONES];
  double min_lr;        /* cosine: the final learning rate (eta_min) */
  int64_t warmup;       /* units of linear warm-up (0: none) */
  double warmup_factor; /* warm-up starts at warmup_factor * the schedule's rate */
  double alpha, beta;   /* dann: lr / (1 + alpha p)^beta */
} gr_schedule;

/* The learning rate for unit t (0-based epoch or step index) of a run of `total` units:
 *   constant   lr
 *   step       lr * gamma^floor(t' / step_size)
 *   multistep  lr * gamma^(number of milestones <= t')
 *   cosine     min_lr + (lr - min_lr) * (1 + cos(pi * t' / (total - warmup))) / 2
 *   dann       lr / (1 + alpha p)^beta, p = t' / (total - warmup) the progress from 0 to 1 (Ganin &
 *              Lempitsky 2015: alpha 10, beta 0.75)
 * with t' = t - warmup (the schedule starts after the warm-up), and during warm-up (t < warmup)
 *   lr * (warmup_factor + (1 - warmup_factor) * t / warmup). */
double gr_schedule_lr(const gr_schedule *s, double lr, int64_t t, int64_t total);

#endif
