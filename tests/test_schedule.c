/* test_schedule.c — learning-rate schedules against the values torch.optim.lr_scheduler gives for the
 * same settings (StepLR, MultiStepLR, CosineAnnealingLR, and a LinearLR warm-up), epoch by epoch, and
 * DANN's annealing (Ganin & Lempitsky 2015) against its formula's values. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include "runtime/schedule.h"

static void expect(const gr_schedule *s, double lr, int64_t total, const double *want, int n) {
  for (int t = 0; t < n; t++) {
    double got = gr_schedule_lr(s, lr, t, total);
    if (fabs(got - want[t]) > 1e-12 * fmax(1, fabs(want[t]))) fail_msg("t=%d: lr %.15g, expected %.15g", t, got, want[t]);
  }
}

static void test_constant(void **state) {
  (void)state;
  gr_schedule s = {.kind = GR_SCHED_CONSTANT};
  expect(&s, 0.1, 5, (double[]){0.1, 0.1, 0.1, 0.1, 0.1}, 5);
}

/* StepLR(step_size=2, gamma=0.5) */
static void test_step(void **state) {
  (void)state;
  gr_schedule s = {.kind = GR_SCHED_STEP, .step_size = 2, .gamma = 0.5};
  expect(&s, 1.0, 6, (double[]){1, 1, 0.5, 0.5, 0.25, 0.25}, 6);
}

/* MultiStepLR(milestones=[2, 5], gamma=0.1) */
static void test_multistep(void **state) {
  (void)state;
  gr_schedule s = {.kind = GR_SCHED_MULTISTEP, .n_milestones = 2, .milestones = {2, 5}, .gamma = 0.1};
  expect(&s, 1.0, 7, (double[]){1, 1, 0.1, 0.1, 0.1, 0.01, 0.01}, 7);
}

/* CosineAnnealingLR(T_max=4, eta_min=0.1) from lr 1.1: 1.1, 0.95355339, 0.6, 0.24644661, then eta_min */
static void test_cosine(void **state) {
  (void)state;
  gr_schedule s = {.kind = GR_SCHED_COSINE, .min_lr = 0.1};
  double h = 0.5 * (1 + cos(M_PI / 4)), q = 0.5 * (1 + cos(3 * M_PI / 4));
  expect(&s, 1.1, 4, (double[]){1.1, 0.1 + h, 0.6, 0.1 + q, 0.1}, 5);
}

/* warm-up over 2 epochs from 0.1 x lr, then StepLR(1, 0.5): 0.1, 0.55, 1, 0.5, 0.25 */
static void test_warmup(void **state) {
  (void)state;
  gr_schedule s = {.kind = GR_SCHED_STEP, .step_size = 1, .gamma = 0.5, .warmup = 2, .warmup_factor = 0.1};
  expect(&s, 1.0, 5, (double[]){0.1, 0.55, 1, 0.5, 0.25}, 5);
}

/* DANN's annealing lr / (1 + 10 p)^0.75 over 4 units, p = t/4, from 0.01: the formula, and its values
 * printed to 10 digits by Python */
static void test_dann(void **state) {
  (void)state;
  gr_schedule s = {.kind = GR_SCHED_DANN, .alpha = 10, .beta = 0.75};
  expect(&s, 0.01, 4, (double[]){0.01, 0.01 / pow(3.5, 0.75), 0.01 / pow(6, 0.75), 0.01 / pow(8.5, 0.75), 0.01 / pow(11, 0.75)}, 5);
  double want[] = {0.0039079497, 0.0026084743, 0.0020087959, 0.0016556003};
  for (int t = 1; t <= 4; t++) assert_true(fabs(gr_schedule_lr(&s, 0.01, t, 4) - want[t - 1]) < 1e-10);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_constant), cmocka_unit_test(test_step), cmocka_unit_test(test_multistep),
      cmocka_unit_test(test_cosine),   cmocka_unit_test(test_warmup), cmocka_unit_test(test_dann),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
