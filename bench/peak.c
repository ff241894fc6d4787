/* Peak multiply-accumulate rates of one core, for bench_step.py's "fraction of peak" rows:
 * 12 independent chains of one instruction (enough to cover its latency on every port that runs
 * it), in a loop the compiler cannot touch. Prints "fp32 <G MAC/s> int8 <G MAC/s>".
 *   cc -O2 -DWIDTH=512 bench/peak.c   (AVX-512 F + VNNI: vfmadd231ps zmm, vpdpbusd zmm)
 *   cc -O2 -DWIDTH=256 bench/peak.c   (AVX2 + FMA: vfmadd231ps ymm; int8 through vpmaddubsw + vpmaddwd + vpaddd)
 */
#include <stdio.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

#if WIDTH == 512
#define R(i) "%%zmm" #i
#define LANES 16
#else
#define R(i) "%%ymm" #i
#define LANES 8
#endif
#define OP12(op) op " " R(14) ", " R(15) ", " R(0) "\n" op " " R(14) ", " R(15) ", " R(1) "\n" op " " R(14) ", " R(15) ", " R(2) "\n" \
    op " " R(14) ", " R(15) ", " R(3) "\n" op " " R(14) ", " R(15) ", " R(4) "\n" op " " R(14) ", " R(15) ", " R(5) "\n"             \
    op " " R(14) ", " R(15) ", " R(6) "\n" op " " R(14) ", " R(15) ", " R(7) "\n" op " " R(14) ", " R(15) ", " R(8) "\n"             \
    op " " R(14) ", " R(15) ", " R(9) "\n" op " " R(14) ", " R(15) ", " R(10) "\n" op " " R(14) ", " R(15) ", " R(11) "\n"

int main(void) {
    const long n = 50000000;
    double t0 = now();
    __asm__ volatile("vpxor %%xmm14, %%xmm14, %%xmm14\n vpxor %%xmm15, %%xmm15, %%xmm15\n mov %0, %%rcx\n 1:\n" OP12("vfmadd231ps")
                     "dec %%rcx\n jnz 1b\n" ::"r"(n) : "rcx", "memory");
    const double fp32 = 12.0 * n * LANES / (now() - t0) / 1e9;
    t0 = now();
#if WIDTH == 512
    __asm__ volatile("mov %0, %%rcx\n 1:\n" OP12("vpdpbusd") "dec %%rcx\n jnz 1b\n" ::"r"(n) : "rcx", "memory");
    const double int8 = 12.0 * n * LANES * 4 / (now() - t0) / 1e9;
#else
    /* vpmaddubsw (32 products) + vpmaddwd + vpaddd per 32 MACs: 4 chains of the three. */
    __asm__ volatile("mov %0, %%rcx\n 1:\n"
                     "vpmaddubsw %%ymm14, %%ymm15, %%ymm0\n vpmaddubsw %%ymm14, %%ymm15, %%ymm1\n"
                     "vpmaddubsw %%ymm14, %%ymm15, %%ymm2\n vpmaddubsw %%ymm14, %%ymm15, %%ymm3\n"
                     "vpmaddwd %%ymm13, %%ymm0, %%ymm4\n vpmaddwd %%ymm13, %%ymm1, %%ymm5\n"
                     "vpmaddwd %%ymm13, %%ymm2, %%ymm6\n vpmaddwd %%ymm13, %%ymm3, %%ymm7\n"
                     "vpaddd %%ymm4, %%ymm8, %%ymm8\n vpaddd %%ymm5, %%ymm9, %%ymm9\n"
                     "vpaddd %%ymm6, %%ymm10, %%ymm10\n vpaddd %%ymm7, %%ymm11, %%ymm11\n"
                     "dec %%rcx\n jnz 1b\n" ::"r"(n) : "rcx", "memory");
    const double int8 = 4.0 * n * 32 / (now() - t0) / 1e9;
#endif
    printf("fp32 %.2f int8 %.2f\n", fp32, int8);
    return 0;
}
