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
