// A minimal test harness: TEST(name) registers a function; CHECK / CHECK_NEAR record failures
// without stopping the test; main() runs all (or those matching argv[1]) and exits non-zero on
// any failure. Tests that need hardware this machine lacks call SKIP(why).
#pragma once
#include <cmath>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

namespace awq::test {

struct Case {
  const char* name;
  std::function<void()> fn;
};
std::vector<Case>& registry();
struct Register {
  Register(const char* name, std::function<void()> fn) { registry().push_back({name, std::move(fn)}); }
};
void fail(const char* file, int line, const std::string& what);
struct Skip {
  std::string why;
};

}  // namespace awq::test

#define TEST(name)                                                   \
  static void test_##name();                                         \
  static ::awq::test::Register register_##name(#name, test_##name);  \
  static void test_##name()

#define CHECK(cond)                                                       \
  do {                                                                    \
    if (!(cond)) ::awq::test::fail(__FILE__, __LINE__, "CHECK(" #cond ")"); \
  } while (0)

#define CHECK_NEAR(a, b, tol)                                                             \
  do {                                                                                    \
    const double awq_a_ = (a), awq_b_ = (b);                                               \
    if (!(std::fabs(awq_a_ - awq_b_) <= (tol)))                                           \
      ::awq::test::fail(__FILE__, __LINE__,                                               \
                        std::string(#a " = ") + std::to_string(awq_a_) + ", " #b " = " +   \
                            std::to_string(awq_b_) + ", tol " + std::to_string(tol));      \
  } while (0)

#define CHECK_THROWS(expr)                                                         \
  do {                                                                             \
    bool awq_threw_ = false;                                                       \
    try {                                                                          \
      expr;                                                                        \
    } catch (...) {                                                                \
      awq_threw_ = true;                                                           \
    }                                                                              \
    if (!awq_threw_) ::awq::test::fail(__FILE__, __LINE__, "expected a throw: " #expr); \
  } while (0)

#define SKIP(why) throw ::awq::test::Skip{why}
