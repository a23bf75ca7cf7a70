// Native CPU kernels for MindSpore's AOT `ops.Custom` (see backend/native.py, which compiles this file once per
// machine and loads it). Each kernel has MindSpore's AOT signature:
//   int Name(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream, void *extra)
// with params = inputs then outputs. Plain C++: the loops are written so that the compiler vectorises them for the
// machine it runs on (-O3 -march=native). Single-threaded: with 2 cores, splitting the columns over OpenMP threads
// made the decode step ~1.7x slower (libgomp's spinning threads compete with MindSpore's own pool; passive waiting
// is a process-wide setting MindSpore has already fixed when it loaded libgomp), and one thread of this loop is as
// fast as MindSpore's 2-thread MatMul on a matrix-vector product.
#include <cstdint>

// dot(w, x) over K floats. 64 independent partial sums: the compiler turns them into 4 vector accumulators
// (AVX-512) or 8 (AVX2), enough independent FMA chains to keep up with the memory stream of w.
static inline float dot(const float *w, const float *x, int64_t K) {
  float acc[64] = {0};
  int64_t k = 0;
  for (; k + 64 <= K; k += 64)
    for (int j = 0; j < 64; j++) acc[j] += w[k + j] * x[k + j];
  float tail = 0.0f;
  for (; k < K; k++) tail += w[k] * x[k];
  float s = 0.0f;
  for (int j = 0; j < 64; j++) s += acc[j];
  return s + tail;
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
  int64_t M = 1;
  for (int i = 0; i < ndims[0] - 1; i++) M *= shapes[0][i];
  const int64_t N = shapes[1][0];
  if (shapes[1][1] != K) return 2;
  linear_nt_columns(x, w, y, M, N, K);
  return 0;
}
