// libFuzzer's driver entry (libclang_rt.fuzzer_no_main): lets our own main run the fuzzer.
#include <stddef.h>
#include <stdint.h>
int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*callback)(const uint8_t *data, size_t size));
