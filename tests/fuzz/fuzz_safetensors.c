/* Fuzz target: the safetensors reader (runtime/safetensors.c) on any file. */
#include "tests/fuzz/fuzz.h"
#include "runtime/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  gr_diag d;
  gr_st_file f;
  if (gr_st_open(fuzz_input(data, size, "in.safetensors", &d), &f, &d) == 0) {
    for (int i = 0; i < f.n; i++) fuzz_touch(f.tensors[i].data, f.tensors[i].nbytes);
    (void)gr_st_find(&f, "x");
    gr_st_close(&f);
  }
  gr_diag_free(&d);
  return 0;
}
