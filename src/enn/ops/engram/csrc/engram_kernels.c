/* Native CPU kernels of the Engram layer (docs/model.md), loaded
 * through ctypes by native.py, which registers them as torch.ops.enn operators:
 *   per_sample_scan.inc: the per-sample trace, one sequence at a time so that its (N, h)
 *     trace stays in cache;
 *   shared_scan.inc: the shared trace (N, h), one step at a time over the whole batch;
 *   hidden_scan.inc: the hidden pass that follows the memory pass (every update);
 *   clipped_trace.inc: the clipped per-sample trace of a memory addressed by its bank alone;
 * All are written once, with the helpers of common.inc (kernels.inc gathers them), and
 * compiled for float and double.
 * Built with -fopenmp, the library shares the OpenMP runtime PyTorch has already loaded (the
 * same libgomp.so.1), so its threads are the ones torch's own operations use. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <tgmath.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* The hidden update (12), as the index into HIDDEN_UPDATES of ops/engram/common.py. */
enum { UPDATE_PAPER, UPDATE_RESIDUAL, UPDATE_GATED };

/* Where the clipped trace's write key comes from, as KEY_MODES in ops/engram/native.py. */
enum { KEY_NONE, KEY_OWN, KEY_SHIFTED };

/* The calling thread's contiguous share [*lo, *hi) of n items (all of them without OpenMP). */
static inline void thread_share(int64_t n, int64_t *lo, int64_t *hi)
{
#ifdef _OPENMP
    const int64_t nt = omp_get_num_threads(), id = omp_get_thread_num();
    *lo = id * n / nt;
    *hi = (id + 1) * n / nt;
#else
    *lo = 0;
    *hi = n;
#endif
}

/* exp(x) in float for x <= 0, within 2 ulp of expf, in plain arithmetic that the compiler
 * vectorises (libm's expf is a call per value): 2^k e^r with k = round(x / ln 2), |r| <=
 * ln 2 / 2, e^r by its Taylor series to degree 7 (truncation below 1e-8). Below -87 (where
 * expf leaves the normal range) it gives 0. */
static inline float exp_nonpositive_f32(float x)
{
    const float k = rintf(x * 1.44269504f);
    const float r = (x - k * 0.693359375f) + k * 2.12194440e-4f; /* ln 2 in two parts */
    float p = 1.0f / 5040;
    p = p * r + 1.0f / 720;
    p = p * r + 1.0f / 120;
    p = p * r + 1.0f / 24;
    p = p * r + 1.0f / 6;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    union { float f; int32_t i; } scale = {.i = ((int32_t)k + 127) << 23};
    return x < -87.0f ? 0.0f : p * scale.f;
}

#define REAL float
#define REAL_IS_FLOAT 1
#define SFX(name) name##_f32
#include "kernels.inc"
#undef REAL
#undef REAL_IS_FLOAT
#undef SFX

#define REAL double
#define REAL_IS_FLOAT 0
#define SFX(name) name##_f64
#include "kernels.inc"
#undef REAL
#undef REAL_IS_FLOAT
#undef SFX
