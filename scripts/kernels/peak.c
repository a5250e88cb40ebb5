/* One core's multiply-add peak: 12 independent chains of 512-bit fused multiply-adds (enough
 * to hide their latency), 16 float lanes each. */
#include <immintrin.h>
#include <stdio.h>
#include <time.h>
int main(void)
{
    __m512 acc[12];
    for (int i = 0; i < 12; i++) acc[i] = _mm512_set1_ps(i * 0.001f);
    const __m512 x = _mm512_set1_ps(0.999f), y = _mm512_set1_ps(0.0001f);
    const long n = 200000000;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (long k = 0; k < n; k++)
#pragma GCC unroll 12
        for (int i = 0; i < 12; i++) acc[i] = _mm512_fmadd_ps(acc[i], x, y);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    const double dt = (t1.tv_sec - t0.tv_sec) + 1e-9 * (t1.tv_nsec - t0.tv_nsec);
    float sum = 0; /* keeps the chains alive */
    for (int i = 0; i < 12; i++) sum += _mm512_reduce_add_ps(acc[i]);
    printf("peak, one core: %.1f G MAC/s (checksum %g)\n", n * 12 * 16 / dt / 1e9, sum);
    return 0;
}
