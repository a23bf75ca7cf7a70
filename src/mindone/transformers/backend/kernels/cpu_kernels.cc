// Native CPU kernels for MindSpore's AOT `ops.Custom` (see backend/native.py, which compiles this file once per
// machine and loads it). Each kernel has MindSpore's AOT signature:
//   int Name(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream, void *extra)
// with params = inputs then outputs. Plain C++: the loops are written so that the compiler vectorises them for the
// machine it runs on (-O3 -march=native). Built with -ffp-contract=off: a multiply-add is fused only where `fmadd`
// is written (so AdamW rounds exactly like torch's fused kernel). Single-threaded: with 2 cores, splitting the
// columns of LinearNT over OpenMP threads made the decode step ~1.7x slower (libgomp's spinning threads compete
// with MindSpore's own pool; passive waiting is a process-wide setting MindSpore has already fixed when it loaded
// libgomp), and one thread of this loop is as fast as MindSpore's 2-thread MatMul on a matrix-vector product.
#include <cmath>
#include <cstdint>

// a * b + c with one rounding where the CPU has an FMA instruction (as torch's vec::fmadd), else two roundings;
// never a libm call in a hot loop
static inline float fmadd(float a, float b, float c) {
#if defined(__FP_FAST_FMAF) || defined(__FMA__) || defined(__ARM_FEATURE_FMA)
  return std::fma(a, b, c);
#else
  return a * b + c;
#endif
}

// dot(w, x) over K floats. 64 independent partial sums: the compiler turns them into 4 vector accumulators
// (AVX-512) or 8 (AVX2), enough independent FMA chains to keep up with the memory stream of w.
static inline float dot(const float *w, const float *x, int64_t K) {
  float acc[64] = {0};
  int64_t k = 0;
  for (; k + 64 <= K; k += 64)
    for (int j = 0; j < 64; j++) acc[j] = fmadd(w[k + j], x[k + j], acc[j]);
  float tail = 0.0f;
  for (; k < K; k++) tail = fmadd(w[k], x[k], tail);
  float s = 0.0f;
  for (int j = 0; j < 64; j++) s += acc[j];
  return s + tail;
}

// number of elements of a tensor given its first `ndim` dimensions (all of them: the tensor's size)
static inline int64_t num_elements(int ndim, const int64_t *shape) {
  int64_t n = 1;
  for (int i = 0; i < ndim; i++) n *= shape[i];
  return n;
}

static void linear_nt_columns(const float *x, const float *w, float *y, int64_t M, int64_t N, int64_t K) {
  for (int64_t n = 0; n < N; n++) {
    const float *row = w + n * K;
    for (int64_t m = 0; m < M; m++) y[m * N + n] = dot(row, x + m * K, K);
  }
}

// y(..., N) = x(..., K) @ w(N, K)^T, float32, contiguous. Meant for few rows of x (decoding): each weight row is
// streamed from memory once, which is what bounds the time; a GEMM library's kernel reaches ~10 GB/s on such
// shapes against ~17 GB/s for this loop (one core, measured).
extern "C" int LinearNT(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
                        void *extra) {
  (void)stream;
  (void)extra;
  (void)dtypes;
  if (nparam != 3) return 1;
  const float *x = static_cast<const float *>(params[0]);
  const float *w = static_cast<const float *>(params[1]);
  float *y = static_cast<float *>(params[2]);
  const int64_t K = shapes[0][ndims[0] - 1];
  const int64_t M = num_elements(ndims[0] - 1, shapes[0]);
  const int64_t N = shapes[1][0];
  if (shapes[1][1] != K) return 2;
  linear_nt_columns(x, w, y, M, N, K);
  return 0;
}

// torch.optim.AdamW's float32 step (decoupled weight decay), one pass over memory:
//   g = grad * grad_scale;  p *= 1 - lr * wd;  m = lerp(m, g, 1 - beta1);  v = beta2 * v + (1 - beta2) * g * g
//   p -= lr / bc1 * m / (sqrt(v) / sqrt(bc2) + eps)
// rounded operation by operation as torch's fused CPU kernel (torch.optim.AdamW(fused=True)): the coefficients `h`
// are formed on the host in double and rounded to float32 once (F.adamw_update_), the lerp is
// fma(w, g - m, m) for w < 0.5 else fma(w - 1, g - m, g) (the branch hoisted out of the loop: kSmallWeight), and
// v = fma((1 - beta2) * g, g, beta2 * v). Bit-identical to the fused kernel where the CPU has FMA.
enum AdamWHyper {
  kDecay, kLerpWeight, kBeta2, kOneMinusBeta2, kBc2Sqrt, kEps, kNegStepSize, kGradScale, kNumHyper
};

template <bool kSmallWeight>
static void adamw_loop(float *__restrict p, float *__restrict m, float *__restrict v, const float *__restrict grad,
                       int64_t n, const float *h) {
  const float decay = h[kDecay], w = h[kLerpWeight], w1 = h[kLerpWeight] - 1.0f, beta2 = h[kBeta2];
  const float c2 = h[kOneMinusBeta2], bc2_sqrt = h[kBc2Sqrt], eps = h[kEps], neg_step = h[kNegStepSize];
  const float scale = h[kGradScale];
  for (int64_t i = 0; i < n; i++) {
    const float g = grad[i] * scale;
    const float pi = p[i] * decay;
    const float diff = g - m[i];
    const float mi = kSmallWeight ? fmadd(w, diff, m[i]) : fmadd(w1, diff, g);
    const float vi = fmadd(c2 * g, g, v[i] * beta2);
    const float denom = std::sqrt(vi) / bc2_sqrt + eps;
    p[i] = pi + (neg_step * mi) / denom;
    m[i] = mi;
    v[i] = vi;
  }
}

// Inputs: param, exp_avg, exp_avg_sq, grad (float32, contiguous, same number of elements), hyper (kNumHyper
// float32). Output: a 1-element dummy, left untouched.
// The three state tensors are updated IN PLACE, through the input pointers, which MindSpore's AOT interface does not
// declare. That is safe only where this op is used: called op by op in PyNative from Python (F.adamw_update_) on
// CPU, where an input pointer is the Parameter's own memory (no copy, no device transfer) and ops run in call order,
// so every later read of these tensors sees the update. Never call it inside mindspore.jit: a graph may reorder,
// fuse or reuse its inputs' memory, since nothing tells the compiler that they change.
extern "C" int AdamW(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
                     void *extra) {
  (void)stream;
  (void)extra;
  (void)dtypes;
  if (nparam != 6) return 1;
  const int64_t n = num_elements(ndims[0], shapes[0]);
  for (int t = 1; t < 4; t++)
    if (num_elements(ndims[t], shapes[t]) != n) return 2;
  if (num_elements(ndims[4], shapes[4]) < kNumHyper) return 3;
  float *p = static_cast<float *>(params[0]);
  float *m = static_cast<float *>(params[1]);
  float *v = static_cast<float *>(params[2]);
  const float *grad = static_cast<const float *>(params[3]);
  const float *h = static_cast<const float *>(params[4]);
  if (h[kLerpWeight] < 0.5f)
    adamw_loop<true>(p, m, v, grad, n, h);
  else
    adamw_loop<false>(p, m, v, grad, n, h);
  return 0;
}

// ==== exact GELU (erf form): forward GeluErf and its gradient GeluErfGrad ============================================
// gelu(x) = x * Phi(x) = 0.5 x (1 + erf(x / sqrt(2))),  gelu'(x) = Phi(x) + x * exp(-x^2 / 2) / sqrt(2 pi).
// float32 in and out, computed in double and rounded once: within 1 ulp of the float64 value where erf is used and
// ~2 ulp in the far negative tail (torch's float kernel: ~1e-6 absolute from float64 for |x| ~ 10, its erf being
// the 1.5e-7 Abramowitz-Stegun formula). Speed (8x257x1536, one core, under load): ~19 ms, torch ~3 ms (float
// arithmetic, 16 lanes), MindSpore's GeLU kernel ~590 ms (two threads).
// Phi(x) = 0.5 erfc(-x / sqrt(2)) with, for z = |x| / sqrt(2):
//   z < 0.75: erf(z) by its Taylor series (12 terms: below 1e-14 there), Phi = 0.5 +- 0.5 erf(z);
//   z >= 0.75: erfc(z) = t exp(-z^2 + R(t)), t = 1 / (1 + z / 2) (Numerical Recipes' erfcc, relative error
//   < 1.2e-7 for every z; erfc(0.75) = 0.29, so Phi's absolute error is below 2e-8, and its relative error is
//   ~1e-7 (~2 float ulp) in the negative tail).
// Single-threaded (see the top of the file). Branch-free (both forms computed, one selected) so that the loop
// vectorises; exp is our own (2^k from exponent bits, Taylor series of the rest): no libm call in the loop.
namespace gelu_erf {

// a * b + c in double, fused where the CPU has FMA (shorter dependency chains in the polynomials: the loop is
// latency-bound, not throughput-bound)
static inline double fmadd_d(double a, double b, double c) {
#if defined(__FP_FAST_FMA) || defined(__FMA__) || defined(__ARM_FEATURE_FMA)
  return std::fma(a, b, c);
#else
  return a * b + c;
#endif
}

// Numerical Recipes' erfcc coefficients, highest power of t first
static const double kErfcc[10] = {0.17087277, -0.82215223, 1.48851587, -1.13520398, 0.27886807, -0.18628806,
                                  0.09678418, 0.37409196, 1.00002368, -1.26551223};

// erf Taylor coefficients (-1)^n / (n! (2n+1)), n = 0..11
static const double kErfTaylor[12] = {
    1.0, -0.3333333333333333, 0.1, -0.023809523809523808,
    0.004629629629629629, -0.0007575757575757576, 0.00010683760683760684, -1.3227513227513228e-05,
    1.4589169000933706e-06, -1.4503852223150468e-07, 1.3122532963802806e-08, -1.0892221037148573e-09,
};

// 1/k!, k = 12..0 (Horner order)
static const double kExpTaylor[13] = {2.08767569878681e-09, 2.505210838544172e-08, 2.755731922398589e-07, 2.7557319223985893e-06, 2.48015873015873e-05, 0.0001984126984126984, 0.001388888888888889, 0.008333333333333333, 0.041666666666666664, 0.16666666666666666, 0.5, 1.0, 1.0};

// exp(y) for y <= 0 in double: y clamped at -708 (exp underflows to 0 in float long before)
static inline double exp_nonpositive(double y) {
  y = y < -708.0 ? -708.0 : y;
  // y / ln 2 rounded to an integer by adding and subtracting 1.5 * 2^52 (std::floor is not vectorised)
  const double k = (y * 1.4426950408889634 + 6755399441055744.0) - 6755399441055744.0;
  const double r = (y - k * 6.93147180369123816490e-01) - k * 1.90821492927058770002e-10;  // |r| <= ln2 / 2
  double p = kExpTaylor[0];
#pragma GCC unroll 16
  for (int i = 1; i < 13; i++) p = fmadd_d(p, r, kExpTaylor[i]);
  return p * __builtin_bit_cast(double, static_cast<int64_t>(k + 1023.0) << 52);
}

// Phi(x) = P(X <= x) for X ~ N(0, 1), and exp(-x^2 / 2) (the density without 1/sqrt(2 pi)) as a by-product
static inline double phi_cdf(double x, double *gauss) {
  const double z = std::fabs(x) * 0.70710678118654752440;
  const double z2 = z * z;
  // Taylor: erf(z) = 2/sqrt(pi) sum_n (-1)^n z^(2n+1) / (n! (2n+1)), Horner in z^2 from n = 11 down
  double s = kErfTaylor[11];
#pragma GCC unroll 16
  for (int n = 10; n >= 0; n--) s = fmadd_d(s, z2, kErfTaylor[n]);
  const double erf_small = 1.12837916709551257390 * z * s;
  // Numerical Recipes' erfcc
  const double t = 1.0 / (1.0 + 0.5 * z);
  double r = kErfcc[0];
#pragma GCC unroll 16
  for (int n = 1; n < 10; n++) r = fmadd_d(r, t, kErfcc[n]);
  const double g = exp_nonpositive(-z2);
  *gauss = g;
  const double erfc_large = t * exp_nonpositive(r - z2);
  // Phi(|x|) = 1 - 0.5 erfc(z), Phi(-|x|) = 0.5 erfc(z)
  const double half_erfc = z < 0.75 ? 0.5 - 0.5 * erf_small : 0.5 * erfc_large;
  return x < 0.0 ? half_erfc : 1.0 - half_erfc;
}

// processed in blocks of kBlock: float -> double, the double loop, double -> float (loops the compiler
// vectorises; one loop mixing the float loads with the double arithmetic was left scalar)
constexpr int64_t kBlock = 256;

// 512-bit vectors where the CPU has them (GCC picks 256-bit ones by default on many CPUs): 8 doubles per operation,
// 2.3x faster on the development machine (AVX-512); no effect elsewhere
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define GELU_VECTOR_WIDTH __attribute__((target("prefer-vector-width=512")))
#else
#define GELU_VECTOR_WIDTH
#endif

GELU_VECTOR_WIDTH static void forward(const float *x, float *y, int64_t n) {
  double v[kBlock], out[kBlock];
  for (int64_t start = 0; start < n; start += kBlock) {
    const int64_t m = n - start < kBlock ? n - start : kBlock;
    for (int64_t i = 0; i < m; i++) v[i] = x[start + i];
#pragma GCC unroll 4
    for (int64_t i = 0; i < kBlock; i++) {
      double gauss;
      out[i] = v[i] * phi_cdf(v[i], &gauss);
    }
    for (int64_t i = 0; i < m; i++) y[start + i] = static_cast<float>(out[i]);
  }
}

GELU_VECTOR_WIDTH static void backward(const float *x, const float *dy, float *dx, int64_t n) {
  double v[kBlock], d[kBlock], out[kBlock];
  for (int64_t start = 0; start < n; start += kBlock) {
    const int64_t m = n - start < kBlock ? n - start : kBlock;
    for (int64_t i = 0; i < m; i++) {
      v[i] = x[start + i];
      d[i] = dy[start + i];
    }
#pragma GCC unroll 4
    for (int64_t i = 0; i < kBlock; i++) {
      double gauss;
      const double cdf = phi_cdf(v[i], &gauss);
      out[i] = d[i] * (cdf + v[i] * gauss * 0.39894228040143267794);
    }
    for (int64_t i = 0; i < m; i++) dx[start + i] = static_cast<float>(out[i]);
  }
}

}  // namespace gelu_erf

// Inputs: x (float32, contiguous). Output: gelu(x), same shape.
extern "C" int GeluErf(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
                       void *extra) {
  (void)stream;
  (void)extra;
  (void)dtypes;
  if (nparam != 2) return 1;
  const float *x = static_cast<const float *>(params[0]);
  float *y = static_cast<float *>(params[1]);
  gelu_erf::forward(x, y, num_elements(ndims[0], shapes[0]));
  return 0;
}

// Inputs: x, dy (float32, contiguous, same size). Output: dx = dy * gelu'(x).
extern "C" int GeluErfGrad(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                           void *stream, void *extra) {
  (void)stream;
  (void)extra;
  (void)dtypes;
  if (nparam != 3) return 1;
  const int64_t n = num_elements(ndims[0], shapes[0]);
  if (num_elements(ndims[1], shapes[1]) != n) return 2;
  const float *x = static_cast<const float *>(params[0]);
  const float *dy = static_cast<const float *>(params[1]);
  float *dx = static_cast<float *>(params[2]);
  gelu_erf::backward(x, dy, dx, n);
  return 0;
}
// ==== end of exact GELU ==============================================================================================
