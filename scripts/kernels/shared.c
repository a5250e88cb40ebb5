/* The shared-trace memory kernels alone at the paper's shapes (B 128, T 28, N 64, h 128, the
 * layer's default constants, trace noise), 2 threads, best of 60; the checksum shows whether
 * two builds give the same results. */
#include SRC
#include <stdio.h>
#include <omp.h>
#include "fill.h"
int main(void)
{
    const int64_t B = 128, T = 28, N = 64, h = 128, Nh = N * h;
    unsigned s = 1;
    float *z = filled(B * T * h, 3, &s), *dm = filled(B * T * h, 1, &s), *M = filled(Nh, 1, &s);
    float *noise = filled(T * Nh, 0.02f, &s), *H0 = calloc(Nh, 4), *dHT = filled(Nh, 0.01f, &s);
    int64_t *n_active = malloc(8 * T);
    for (int64_t t = 0; t < T; t++) n_active[t] = B;
    float *A = malloc(4 * B * T * N), *m = malloc(4 * B * T * h), *HT = malloc(4 * Nh);
    float *Es = malloc(4 * T * Nh), *ETs = malloc(4 * T * Nh), *P = malloc(4 * T * Nh);
    float *R = malloc(4 * T * N), *NZ = malloc(4 * B * T);
    float *dz = malloc(4 * B * T * h), *dM = malloc(4 * Nh), *dH0 = malloc(4 * Nh);
    double fwd = 1e9, bwd = 1e9;
    for (int r = 0; r < 60; r++) {
        const double t0 = omp_get_wtime();
        enn_shared_forward_f32(z, M, H0, noise, NULL, n_active, B, T, N, h, 0.5, 0.05, 0.1, 2.0, 0,
                               A, m, HT, Es, ETs, P, R, NZ, 2);
        const double t1 = omp_get_wtime();
        enn_shared_backward_f32(z, NULL, n_active, A, Es, ETs, P, R, NZ, NULL, dm, dHT, B, T, N, h,
                                0.5, 0.05, 0.1, 2.0, dz, dM, dH0, 2);
        const double t2 = omp_get_wtime();
        fwd = t1 - t0 < fwd ? t1 - t0 : fwd;
        bwd = t2 - t1 < bwd ? t2 - t1 : bwd;
    }
    double check = 0;
    for (int64_t i = 0; i < B * T * h; i++) check += m[i] + dz[i];
    printf("shared memory pass, 2 threads: forward %.2f ms, backward %.2f ms (checksum %.9g)\n",
           fwd * 1e3, bwd * 1e3, check);
    return 0;
}
