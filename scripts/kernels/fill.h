/* n values uniform in [-scale / 2, scale / 2), from a fixed linear congruential stream s. */
static float *filled(int64_t n, float scale, unsigned *s)
{
    float *x = malloc(4 * n);
    for (int64_t i = 0; i < n; i++)
        x[i] = (((*s = *s * 1664525u + 1013904223u) >> 8) / 16777216.0f - 0.5f) * scale;
    return x;
}
