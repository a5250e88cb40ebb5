/* The hidden kernel's per-step product alone: (64 rows per thread) x (3h, 3h), h = 128, over
 * 28 steps, with its ReLU epilogue (no bias): the best of 20, in G MAC/s. */
#include SRC
#include <stdio.h>
#include <omp.h>
int main(void)
{
    const int64_t B = 128, T = 28, h3 = 384;
    float *X = aligned_alloc(64, 4 * B * T * h3), *W = aligned_alloc(64, 4 * h3 * h3);
    float *Y = aligned_alloc(64, 4 * B * T * h3);
    unsigned s = 1;
    for (int64_t i = 0; i < B * T * h3; i++) X[i] = ((s = s * 1664525u + 1013904223u) >> 8) / 16777216.0f - 0.5f;
    for (int64_t i = 0; i < h3 * h3; i++) W[i] = (((s = s * 1664525u + 1013904223u) >> 8) / 16777216.0f - 0.5f) * 0.1f;
    const struct epilogue_f32 relu = {.relu = 1};
    for (int nt = 1; nt <= 2; nt++) {
        double best = 1e9;
        for (int rep = 0; rep < 20; rep++) {
            const double t0 = omp_get_wtime();
#pragma omp parallel num_threads(nt)
            {
                int64_t b0, b1;
                thread_share(B, &b0, &b1);
                for (int64_t t = 0; t < T; t++)
                    gemm_f32(X + (b0 * T + t) * h3, T * h3, W, h3, Y + (b0 * T + t) * h3,
                             T * h3, b1 - b0, h3, h3, &relu);
            }
            const double dt = omp_get_wtime() - t0;
            best = dt < best ? dt : best;
        }
        printf("gemm, %d thread(s): %.2f ms, %.1f G MAC/s\n", nt, best * 1e3,
               B * T * h3 * h3 / best / 1e9);
    }
    return 0;
}
