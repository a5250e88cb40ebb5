/* The hidden kernels alone at the paper's shapes (B 128, T 28, h 128; the classifier's
 * gradient at the last step only), best of 40: forward and backward, then the backward's
 * two weight gradients by themselves on the same data. */
#include SRC
#include <stdio.h>
#include <omp.h>
#include "fill.h"
int main(void)
{
    const int64_t B = 128, T = 28, h = 128, h3 = 3 * h, BT = B * T;
    unsigned s = 1;
    float *z = filled(BT * h, 1, &s), *m = filled(BT * h, 1, &s), *S = malloc(4 * BT * h);
    float *Wc = filled(h3 * h3, 0.1f, &s), *Wo = filled(h * h3, 0.1f, &s);
    float *h0 = calloc(B * h, 4), *ln_w = malloc(4 * h), *ln_b = calloc(h, 4), *g_out = calloc(BT * h, 4);
    for (int64_t j = 0; j < h; j++) ln_w[j] = 1;
    for (int64_t b = 0; b < B; b++)
        for (int64_t j = 0; j < h; j++) g_out[(b * T + T - 1) * h + j] = 0.01f * (j % 13);
    float *out = malloc(4 * BT * h), *hT = malloc(4 * B * h), *C = malloc(4 * BT * h3);
    float *U = malloc(4 * BT * h), *MU = malloc(4 * BT), *RS = malloc(4 * BT);
    float *G_pre = malloc(4 * BT * h3), *g_z = malloc(4 * BT * h), *g_m = malloc(4 * BT * h);
    float *G_u = malloc(4 * BT * h), *g_h0 = malloc(4 * B * h);
    float *g_Wc = malloc(4 * h3 * h3), *g_Wo = malloc(4 * h * h3), *g_vec = malloc(4 * 6 * h);
    double fwd = 1e9, bwd = 1e9, wg = 1e9;
    for (int r = 0; r < 40; r++) {
        const double t0 = omp_get_wtime();
        enn_hidden_forward_f32(z, m, S, h0, Wc, Wo, NULL, NULL, ln_w, ln_b, 1e-5, NULL, B, T, h, out,
                               hT, C, U, MU, RS, 2);
        const double t1 = omp_get_wtime();
        enn_hidden_backward_f32(g_out, NULL, Wc, Wo, ln_w, NULL, z, m, S, C, U, MU, RS, B, T, h, G_pre,
                                g_z, g_m, G_u, g_h0, g_Wc, g_Wo, g_vec, 2);
        const double t2 = omp_get_wtime();
#pragma omp parallel num_threads(2)
        {
            const struct blocks_f32 x = {{z, m, S}, {h, h, h}, 3, h}, c = one_block_f32(C, h3, h3);
            weight_grad_f32(G_pre, h3, &x, BT, h3, g_Wc);
            weight_grad_f32(G_u, h, &c, BT, h, g_Wo);
        }
        const double t3 = omp_get_wtime();
        fwd = t1 - t0 < fwd ? t1 - t0 : fwd;
        bwd = t2 - t1 < bwd ? t2 - t1 : bwd;
        wg = t3 - t2 < wg ? t3 - t2 : wg;
    }
    const double mac = BT * (double)(h3 * h3 + h3 * h) / 1e9;
    printf("hidden, 2 threads: forward %.2f ms (%.0f G MAC/s), backward %.2f ms (%.0f G MAC/s), "
           "its weight gradients alone %.2f ms (%.0f G MAC/s)\n",
           fwd * 1e3, mac / fwd, bwd * 1e3, 2 * mac / bwd, wg * 1e3, mac / wg);
    return 0;
}
