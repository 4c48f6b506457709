/* fuzz_main.c — main() for a fuzz harness built without libFuzzer: runs every file named on the
 * command line (a directory: every file in it) through LLVMFuzzerTestOneInput once. Exit status 0
 * if all ran (a crash or sanitizer report ends the process with its own status). */
#include "tests/fuzz/fuzz.h"
#include <dirent.h>
#include <sys/stat.h>

static int run_file(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    fprintf(stderr, "%s: cannot open\n", path);
    return 1;
  }
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  rewind(f);
  uint8_t *buf = malloc((size_t)n + 1);
  if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n) abort();
  fclose(f);
  LLVMFuzzerTestOneInput(buf, (size_t)n);
  free(buf);
  return 0;
}

int main(int argc, char **argv) {
  int bad = 0, runs = 0;
  for (int i = 1; i < argc; i++) {
    struct stat st;
    if (stat(argv[i], &st) != 0) {
      fprintf(stderr, "%s: cannot open\n", argv[i]);
      bad = 1;
      continue;
    }
    if (!S_ISDIR(st.st_mode)) {
      bad |= run_file(argv[i]);
      runs++;
      continue;
    }
    DIR *dp = opendir(argv[i]);
    struct dirent *e;
    while (dp && (e = readdir(dp))) {
      if (e->d_name[0] == '.') continue;
      char p[4096];
      snprintf(p, sizeof p, "%s/%s", argv[i], e->d_name);
      if (stat(p, &st) == 0 && S_ISREG(st.st_mode)) {
        bad |= run_file(p);
        runs++;
      }
    }
    if (dp) closedir(dp);
  }
  printf("%d inputs replayed\n", runs);
  return bad;
}
