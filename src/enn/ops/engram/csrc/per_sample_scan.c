/* Native CPU kernel of the per-sample Engram memory pass (ENN_SPEC section 2, steps 2-6
 * and 9): the exact step recurrence, clip included, one sample at a time so that its
 * (N, h) trace stays in cache. Loaded through ctypes by cpu_scan.py, which documents the
 * arguments; the body is written once in per_sample_scan.inc and compiled for float and
 * double.
 * Built with -fopenmp, it shares the OpenMP runtime PyTorch has already loaded (same
 * libgomp.so.1), so its threads are the ones torch's own operations use. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <tgmath.h>

#define REAL float
#define SFX(name) name##_f32
#include "per_sample_scan.inc"
#undef REAL
#undef SFX

#define REAL double
#define SFX(name) name##_f64
#include "per_sample_scan.inc"
#undef REAL
#undef SFX
