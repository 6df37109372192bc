#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "../core/convert.h"
#include "../core/dtype.h"
#include "../core/pack.h"
#include "test.h"

using namespace awq;

// Expected words written by hand from REFERENCE.md section 6: nibble i holds output column
// 8c + [0,2,4,6,1,3,5,7][i].
TEST(pack_awq_hand_built_words) {
  // out = 8, in = 1, g = 1, q[r] = r + 1 -> nibbles (low to high) 1,3,5,7,2,4,6,8.
  std::vector<uint8_t> q = {1, 2, 3, 4, 5, 6, 7, 8}, z = {15, 0, 0, 0, 0, 0, 0, 0};
  std::vector<float> s(8, 1.0f);
  int32_t qw = 0, qz = 0;
  std::vector<uint16_t> s16(8);
  pack_awq(q.data(), z.data(), s.data(), 8, 1, 1, &qw, &qz, s16.data());
  CHECK(static_cast<uint32_t>(qw) == 0x86427531u);
  CHECK(static_cast<uint32_t>(qz) == 0x0000000Fu);
  CHECK(s16[0] == 0x3c00);

  // A single 15 at output row r lands in nibble [0,4,1,5,2,6,3,7][r % 8] of word r / 8.
  const uint32_t expected[8] = {0x0000000Fu, 0x000F0000u, 0x000000F0u, 0x00F00000u,
                                0x00000F00u, 0x0F000000u, 0x0000F000u, 0xF0000000u};
  for (int r = 0; r < 16; ++r) {
    // out = 16, in = 4, g = 2; the 15 sits at input row 3 (group 1).
    std::vector<uint8_t> q2(16 * 4, 0), z2(16 * 2, 0);
    std::vector<float> s2(16 * 2, 0.5f);
    q2[r * 4 + 3] = 15;
    z2[r * 2 + 1] = 15;
    std::vector<int32_t> w(4 * 2), wz(2 * 2);
    std::vector<uint16_t> h(2 * 16);
    pack_awq(q2.data(), z2.data(), s2.data(), 16, 4, 2, w.data(), wz.data(), h.data());
    for (int i = 0; i < 4; ++i) {
      for (int c = 0; c < 2; ++c) {
        const uint32_t want = (i == 3 && c == r / 8) ? expected[r % 8] : 0u;
        CHECK(static_cast<uint32_t>(w[i * 2 + c]) == want);
        const uint32_t wantz = (i == 1 && c == r / 8) ? expected[r % 8] : 0u;
        if (i < 2) CHECK(static_cast<uint32_t>(wz[i * 2 + c]) == wantz);
      }
    }
  }
}

TEST(pack_unpack_dequantize_round_trip_exact) {
  std::mt19937 rng(5);
  for (auto [out, in, g] : {std::tuple<int64_t, int64_t, int64_t>{8, 1, 1}, {24, 40, 8}, {136, 384, 128}, {264, 300, 300}}) {
    const int64_t groups = in / g;
    std::vector<uint8_t> q(out * in), z(out * groups);
    std::vector<float> s(out * groups);
    for (auto& v : q) v = rng() % 16;
    for (auto& v : z) v = rng() % 16;
    for (auto& v : s) v = std::ldexp(static_cast<float>(rng() % 2048 + 1), -static_cast<int>(rng() % 20));
    std::vector<int32_t> qw(in * out / 8), qz(groups * out / 8);
    std::vector<uint16_t> s16(groups * out);
    pack_awq(q.data(), z.data(), s.data(), out, in, g, qw.data(), qz.data(), s16.data());
    std::vector<uint8_t> q2(q.size()), z2(z.size());
    std::vector<float> sb(s.size()), w(out * in);
    unpack_awq(qw.data(), qz.data(), s16.data(), in, out, g, q2.data(), z2.data(), sb.data());
    CHECK(q2 == q);
    CHECK(z2 == z);
    int bad = 0;
    for (size_t k = 0; k < s.size(); ++k) bad += sb[k] != round_to_fp16(s[k]);
    dequantize_awq(qw.data(), qz.data(), s16.data(), in, out, g, w.data());
    for (int64_t r = 0; r < out; ++r) {
      for (int64_t i = 0; i < in; ++i) {
        const float ref = (static_cast<float>(q[r * in + i]) - z[r * groups + i / g]) * round_to_fp16(s[r * groups + i / g]);
        bad += w[r * in + i] != ref;
      }
    }
    CHECK(bad == 0);
  }
}

TEST(pack_awq_rejects_bad_values_and_shapes) {
  std::vector<uint8_t> q(8 * 4, 1), z(8 * 2, 1);
  std::vector<float> s(8 * 2, 1.f);
  std::vector<int32_t> qw(4), qz(2);
  std::vector<uint16_t> s16(16);
  q[5] = 16;
  CHECK_THROWS(pack_awq(q.data(), z.data(), s.data(), 8, 4, 2, qw.data(), qz.data(), s16.data()));
  q[5] = 0;
  z[3] = 200;
  CHECK_THROWS(pack_awq(q.data(), z.data(), s.data(), 8, 4, 2, qw.data(), qz.data(), s16.data()));
  z[3] = 0;
  s[1] = 1e6f;  // overflows fp16
  CHECK_THROWS(pack_awq(q.data(), z.data(), s.data(), 8, 4, 2, qw.data(), qz.data(), s16.data()));
  s[1] = NAN;
  CHECK_THROWS(pack_awq(q.data(), z.data(), s.data(), 8, 4, 2, qw.data(), qz.data(), s16.data()));
  s[1] = 1.f;
  CHECK_THROWS(pack_awq(q.data(), z.data(), s.data(), 12, 4, 2, qw.data(), qz.data(), s16.data()));  // out % 8
  CHECK_THROWS(pack_awq(q.data(), z.data(), s.data(), 8, 4, 3, qw.data(), qz.data(), s16.data()));   // in % g
  pack_awq(q.data(), z.data(), s.data(), 8, 4, 2, qw.data(), qz.data(), s16.data());
  CHECK(static_cast<uint32_t>(qw[0]) == 0x11111111u);
}

TEST(convert_checked_narrowing_reports_non_finite_and_overflow) {
  std::vector<float> x(200000, 1.5f);
  std::vector<uint16_t> h(x.size());
  NarrowReport r = f32_to_fp16_checked(x.data(), h.data(), static_cast<int64_t>(x.size()));
  CHECK(r.first_non_finite == -1 && r.first_overflow == -1);
  CHECK(h[12345] == 0x3e00);
  x[150001] = 70000.f;
  x[190000] = 65519.f;  // rounds to 65504: fits
  x[170000] = -INFINITY;
  x[180000] = 1e5f;
  r = f32_to_fp16_checked(x.data(), h.data(), static_cast<int64_t>(x.size()));
  CHECK(r.first_overflow == 150001);
  CHECK(r.first_non_finite == 170000);
  CHECK(h[190000] == 0x7bff);
  r = f32_to_bf16_checked(x.data(), h.data(), static_cast<int64_t>(x.size()));
  CHECK(r.first_overflow == -1);  // bf16 has fp32's range
  CHECK(r.first_non_finite == 170000);
  x[7] = 3.4e38f;  // rounds past bf16's largest finite value
  r = f32_to_bf16_checked(x.data(), h.data(), static_cast<int64_t>(x.size()));
  CHECK(r.first_overflow == 7);
}
