// What libtorch says of its own floating-point paths, for sys/numerics.rs: the CPU
// capability ATen's kernels were dispatched for (DEFAULT, AVX2, AVX512), and the version of
// the headers runner was built against.
#include <ATen/Version.h>
#include <torch/headeronly/version.h>

#include <cstring>
#include <string>

extern "C" {

// Copies ATen's CPU capability into buf (at most n bytes with the terminating NUL).
void runner_cpu_capability(char* buf, size_t n) {
    std::string s = at::get_cpu_capability();
    if (n == 0) return;
    std::strncpy(buf, s.c_str(), n - 1);
    buf[n - 1] = '\0';
}

// The libtorch version of the headers runner was compiled against ("2.11.0").
const char* runner_libtorch_version() {
#define RUNNER_STR2(x) #x
#define RUNNER_STR(x) RUNNER_STR2(x)
    return RUNNER_STR(TORCH_VERSION_MAJOR) "." RUNNER_STR(TORCH_VERSION_MINOR) "." RUNNER_STR(TORCH_VERSION_PATCH);
}

}  // extern "C"
