/* schedule.c — learning-rate schedules (see schedule.h for the formulas); each matches the
 * corresponding torch.optim.lr_scheduler (StepLR, MultiStepLR, CosineAnnealingLR, LinearLR warm-up)
 * evaluated in closed form, so resuming at any step gives the same rate. */
#include "runtime/schedule.h"
#include <math.h>
#include <stddef.h>

const char *const gr_sched_names[GR_SCHED_COUNT + 1] = {"constant", "step", "multistep", "cosine", "dann", NULL};

double gr_schedule_lr(const gr_schedule *s, double lr, int64_t t, int64_t total) {
  if (s->warmup > 0 && t < s->warmup) return lr * (s->warmup_factor + (1 - s->warmup_factor) * (double)t / (double)s->warmup);
  int64_t u = t - s->warmup;
  switch (s->kind) {
  case GR_SCHED_CONSTANT: return lr;
  case GR_SCHED_STEP: return lr * pow(s->gamma, (double)(u / s->step_size));
  case GR_SCHED_MULTISTEP: {
    int k = 0;
    while (k < s->n_milestones && s->milestones[k] <= u) k++;
    return lr * pow(s->gamma, k);
  }
  case GR_SCHED_COSINE: {
    int64_t span = total - s->warmup;
    if (span <= 0 || u >= span) return s->min_lr;
    return s->min_lr + (lr - s->min_lr) * (1 + cos(M_PI * (double)u / (double)span)) / 2;
  }
  case GR_SCHED_DANN: {
    int64_t span = total - s->warmup;
    double p = span > 0 ? (double)u / (double)span : 0;
    return lr / pow(1 + s->alpha * p, s->beta);
  }
  case GR_SCHED_COUNT: break;
  }
  return lr;
}
