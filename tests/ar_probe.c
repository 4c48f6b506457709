/* ar_probe.c — the object file test_archive puts into an archive and links a program against: one
 * function whose value the program prints. Built without sanitizers, so a plain `cc` can link it. */
int graft_ar_probe(int x);
int graft_ar_probe(int x) { return 6 * x + 1; }
