/* Native CPU kernels of the Engram layer (ENN_SPEC section 2), loaded
 * through ctypes by cpu_scan.py, which documents the arguments:
 *   per_sample_scan.inc: the per-sample trace, one sequence at a time so that its (N, h)
 *     trace stays in cache;
 *   shared_scan.inc: the shared trace (N, h), one step at a time over the whole batch;
 *   hidden_scan.inc: the hidden pass that follows the memory pass (both trace modes).
 * Both are written once, with the helpers of common.inc, and compiled for float and double.
 * Built with -fopenmp, the library shares the OpenMP runtime PyTorch has already loaded (the
 * same libgomp.so.1), so its threads are the ones torch's own operations use. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <tgmath.h>
#ifdef _OPENMP
#include <omp.h>
#endif

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

#define REAL float
#define SFX(name) name##_f32
#include "common.inc"
#include "per_sample_scan.inc"
#include "shared_scan.inc"
#include "hidden_scan.inc"
#undef NORM_EPS
#undef TILE
#undef REAL
#undef SFX

#define REAL double
#define SFX(name) name##_f64
#include "common.inc"
#include "per_sample_scan.inc"
#include "shared_scan.inc"
#include "hidden_scan.inc"
#undef NORM_EPS
#undef TILE
#undef REAL
#undef SFX
