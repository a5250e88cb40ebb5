/* The per-sample memory kernels alone at the paper's shapes (B 128, T 28, N 64, h 128, the
 * layer's default constants, trace noise), 2 threads, best of 30; the checksum shows whether
 * two builds give the same results. */
#include SRC
#include <stdio.h>
#include <omp.h>
#include "fill.h"
int main(void)
{
    const int64_t B = 128, T = 28, N = 64, h = 128, C = 16, Nh = N * h, n_ck = (T + C - 1) / C;
    unsigned s = 1;
    float *z = filled(B * T * h, 3, &s), *gm = filled(B * T * h, 1, &s), *M = filled(Nh, 1, &s);
    float *noise = filled(T * Nh, 0.02f, &s), *gHT = filled(B * Nh, 0.01f, &s);
    float *A = calloc(B * T * N, 4), *m = calloc(B * T * h, 4), *HT = malloc(4 * B * Nh);
    float *ckpt = malloc(4 * B * (n_ck - 1) * Nh), *R = malloc(4 * B * T * N);
    float *S = malloc(4 * B * T * N), *NZ = malloc(4 * B * T);
    float *gz = calloc(B * T * h, 4), *gM = calloc(Nh, 4);
    uint8_t *clipped = calloc(B * n_ck, 1);
    double fwd = 1e9, bwd = 1e9;
    for (int r = 0; r < 30; r++) {
        const double t0 = omp_get_wtime();
        enn_scan_forward_f32(z, M, NULL, noise, NULL, T, N, h, C, 0.5, 0.05, 0.1, 2.0, 0, A, m,
                             HT, ckpt, clipped, R, S, NZ, B, 2);
        const double t1 = omp_get_wtime();
        enn_scan_backward_f32(z, M, NULL, noise, NULL, HT, ckpt, clipped, A, R, S, NZ, NULL, gm, gHT, T, N, h,
                              C, 0.5, 0.05, 0.1, 2.0, gz, gM, NULL, B, 2);
        const double t2 = omp_get_wtime();
        fwd = t1 - t0 < fwd ? t1 - t0 : fwd;
        bwd = t2 - t1 < bwd ? t2 - t1 : bwd;
    }
    double check = 0;
    for (int64_t i = 0; i < B * T * h; i++) check += m[i] + gz[i];
    printf("per-sample memory pass, 2 threads: forward %.2f ms, backward %.2f ms (checksum "
           "%.9g)\n", fwd * 1e3, bwd * 1e3, check);
    return 0;
}
