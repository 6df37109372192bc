#include <cstring>

#include "../core/cpu_features.h"
#include "../core/threadpool.h"
#include "test.h"

namespace awq::test {

std::vector<Case>& registry() {
  static std::vector<Case> cases;
  return cases;
}

static int g_failures_in_case = 0;

void fail(const char* file, int line, const std::string& what) {
  if (g_failures_in_case < 10) std::fprintf(stderr, "    %s:%d: %s\n", file, line, what.c_str());
  ++g_failures_in_case;
}

}  // namespace awq::test

int main(int argc, char** argv) {
  using namespace awq::test;
  const char* filter = argc > 1 ? argv[1] : nullptr;
  std::printf("awq_tests: isa %s (%s), %d threads\n", awq::isa_name(awq::active_isa()),
              awq::cpu_feature_list().c_str(), awq::num_threads());
  int passed = 0, failed = 0, skipped = 0;
  for (const Case& c : registry()) {
    if (filter && !std::strstr(c.name, filter)) continue;
    g_failures_in_case = 0;
    try {
      c.fn();
    } catch (const Skip& s) {
      std::printf("SKIP %s (%s)\n", c.name, s.why.c_str());
      ++skipped;
      continue;
    } catch (const std::exception& e) {
      fail(__FILE__, __LINE__, std::string("unexpected exception: ") + e.what());
    }
    if (g_failures_in_case == 0) {
      std::printf("ok   %s\n", c.name);
      ++passed;
    } else {
      std::printf("FAIL %s (%d checks)\n", c.name, g_failures_in_case);
      ++failed;
    }
  }
  std::printf("native: %d passed, %d failed, %d skipped\n", passed, failed, skipped);
  return failed == 0 ? 0 : 1;
}
