/* Fuzz target: the YAML frontends through the compiler: model and plan parsed, blocks expanded,
 * shapes inferred, frozen, folded, differentiated, optimised and memory-planned (every pass but
 * LLVM code generation), for every phase of the plan. The first byte chooses what the rest is: a
 * model file (even) under a fixed plan, or a plan file (odd) over a fixed model. */
#include "tests/fuzz/fuzz.h"
#include "compiler/compiler.h"

static const char fixed_model[] =
    "name: fixed\n"
    "input: {shape: [1, 8, 8]}\n"
    "blocks:\n"
    "  unit:\n"
    "    params: {ch: ~}\n"
    "    layers:\n"
    "      - {name: conv, op: conv2d, out_channels: $ch, kernel_size: 3, padding: 1, bias: false}\n"
    "      - {name: bn, op: batchnorm}\n"
    "      - {name: relu, op: relu}\n"
    "layers:\n"
    "  - {name: stem, op: unit, ch: 4}\n"
    "  - {name: pool, op: maxpool2d, kernel_size: 2}\n"
    "  - {name: flat, op: flatten}\n"
    "  - {name: fc1, op: linear, out_features: 8}\n"
    "  - {name: drop, op: dropout, p: 0.1}\n"
    "  - {name: fc2, op: linear, out_features: 3}\n";

static const char fixed_plan[] =
    "model: model.yaml\n"
    "data: {format: tensors, train: {file: none.safetensors}}\n"
    "loss: cross_entropy\n"
    "optimizer: {type: adam, learning_rate: 0.001}\n"
    "freeze: [\"*\"]\n"
    "unfreeze: [fc2]\n"
    "phases: [{epochs: 1}, {epochs: 1, unfreeze: fc1}]\n"
    "batch_size: 4\n";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  bool is_plan = data[0] & 1;
  const char *model = fuzz_path("model.yaml"), *plan = fuzz_path("plan.yaml");
  fuzz_write(model, is_plan ? (const uint8_t *)fixed_model : data + 1, is_plan ? sizeof fixed_model - 1 : size - 1);
  fuzz_write(plan, is_plan ? data + 1 : (const uint8_t *)fixed_plan, is_plan ? size - 1 : sizeof fixed_plan - 1);
  gr_diag d;
  fuzz_diag(&d);
  gr_compile_opts o = {.stop_before_codegen = true, .dump = NULL};
  gr_compiled c;
  bool ok = gr_compile_plan(plan, &d, &o, &c);
  int phases = ok ? c.plan.tl.n_phases : 0;
  gr_compiled_free(&c);
  for (int k = 1; k < phases && k < 4; k++) { /* the later phases, compiled on their own as graft train does */
    o.phase = k;
    gr_compile_plan(plan, &d, &o, &c);
    gr_compiled_free(&c);
  }
  gr_diag_free(&d);
  return 0;
}
