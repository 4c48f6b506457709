/* match.c — name patterns of plans (freeze:, unfreeze:, init exclude:, batchnorm:, param_groups:).
 * A pattern is a shell glob (fnmatch(3): `*`, `?`, `[...]`; `*` also crosses dots) matched against a
 * dotted name and each of its leading components: `layer1` matches `layer1.0.conv1.weight` because
 * it matches the prefix `layer1`, so a layer's name stands for all of its parameters. */
#include "ir/ir.h"
#include <fnmatch.h>
#include <string.h>

bool gr_glob_match(const char *pattern, const char *name) {
  if (fnmatch(pattern, name, 0) == 0) return true;
  char prefix[1024];
  size_t len = strlen(name);
  if (len >= sizeof prefix) return false;
  for (size_t k = 0; k < len; k++) {
    if (name[k] != '.') continue;
    memcpy(prefix, name, k);
    prefix[k] = 0;
    if (fnmatch(pattern, prefix, 0) == 0) return true;
  }
  return false;
}
