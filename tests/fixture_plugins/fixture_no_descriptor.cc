// A shared library named like a plugin that exports no descriptor.
extern "C" __attribute__((visibility("default"))) int fluxattn_fixture_unrelated_symbol() {
  return 42;
}
