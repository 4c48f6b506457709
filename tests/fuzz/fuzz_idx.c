/* Fuzz target: the IDX reader (runtime/idx.c), plain and gzip-compressed, on any file. */
#include "tests/fuzz/fuzz.h"
#include "runtime/idx.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  gr_diag d;
  gr_idx x;
  if (gr_idx_read(fuzz_input(data, size, "in.idx", &d), &x, &d) == 0) {
    fuzz_touch(x.data, (int64_t)x.nbytes);
    gr_idx_free(&x);
  }
  gr_diag_free(&d);
  return 0;
}
