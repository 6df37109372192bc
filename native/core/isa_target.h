// The instruction sets one kernel file is compiled for beyond the build's baseline, from
// AWQ_TARGET_BEGIN("avx2,fma") to AWQ_TARGET_END() (x86-64; arm64: int4_gemm_neon_dotprod.cc,
// gemm_neon_bf16.cc). GCC takes `#pragma GCC target` (between push_options and pop_options); clang has no such pragma, and
// `#pragma clang attribute` gives every function that follows the same target attribute instead.
// Standard headers come before AWQ_TARGET_BEGIN (see stats_avx2.cc).
#pragma once

#define AWQ_PRAGMA(x) _Pragma(#x)
#if defined(__clang__)
#define AWQ_TARGET_BEGIN(isa) AWQ_PRAGMA(clang attribute push(__attribute__((target(isa))), apply_to = function))
#define AWQ_TARGET_END() AWQ_PRAGMA(clang attribute pop)
#else
#define AWQ_TARGET_BEGIN(isa) AWQ_PRAGMA(GCC push_options) AWQ_PRAGMA(GCC target(isa))
#define AWQ_TARGET_END() AWQ_PRAGMA(GCC pop_options)
#endif
