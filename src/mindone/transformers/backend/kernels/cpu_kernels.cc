// Native CPU kernels for MindSpore's AOT `ops.Custom` (see backend/native.py, which compiles this file once per
// machine and loads it). Each kernel has MindSpore's AOT signature:
//   int Name(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream, void *extra)
// with params = inputs then outputs. Plain C++: the loops are written so that the compiler vectorises them for the
// machine it runs on (-O3 -march=native). Built with -ffp-contract=off: a multiply-add is fused only where `fmadd`
// is written (so AdamW rounds exactly like torch's fused kernel). Threads: OpenMP is not used (splitting the
// columns of LinearNT over OpenMP threads made the decode step ~1.7x slower with 2 cores: libgomp's spinning
// threads compete with MindSpore's own pool, and passive waiting is a process-wide setting MindSpore has already
// fixed when it loaded libgomp); LinearNT and the int8-activation products split their output rows over the small
// worker pool of section "worker threads" (short spin, then sleep), and so do the elementwise and row kernels of
// training steps and encoder forwards on large enough tensors (see kParallelGrain).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

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
// (AVX-512) or 8 (AVX2), enough independent FMA chains to keep up with the memory stream of w. They are added
// pairwise (32 + 32, 16 + 16, ...: vector adds) rather than one after another: a sequential sum is 64 dependent adds,
// which made a head-size (64) dot product, the decode attention's score, latency-bound.
static inline float dot(const float *w, const float *x, int64_t K) {
  float acc[64] = {0};
  int64_t k = 0;
  for (; k + 64 <= K; k += 64)
    for (int j = 0; j < 64; j++) acc[j] = fmadd(w[k + j], x[k + j], acc[j]);
  float tail = 0.0f;
  for (; k < K; k++) tail = fmadd(w[k], x[k], tail);
  for (int half = 32; half >= 1; half /= 2)
    for (int j = 0; j < half; j++) acc[j] += acc[j + half];
  return acc[0] + tail;
}

// number of elements of a tensor given its first `ndim` dimensions (all of them: the tensor's size)
static inline int64_t num_elements(int ndim, const int64_t *shape) {
  int64_t n = 1;
  for (int i = 0; i < ndim; i++) n *= shape[i];
  return n;
}

#if defined(__AVX2__) || defined(__F16C__)
#include <immintrin.h>
#endif
#if defined(__AVX2__)
// the sum of a vector's 8 floats
static inline float hsum256(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
#endif

static void linear_nt_columns(const float *x, const float *w, float *y, int64_t M, int64_t N, int64_t K) {
  for (int64_t n = 0; n < N; n++) {
    const float *row = w + n * K;
    for (int64_t m = 0; m < M; m++) y[m * N + n] = dot(row, x + m * K, K);
  }
}

#if defined(__AVX512F__)
#include <immintrin.h>
// y(N) = w(N, K) @ x(K), four weight rows at a time with two accumulators each: eight independent FMA chains, x's
// vectors loaded once per four rows, one horizontal sum per row. The generic `dot` above ends every row with a
// sequential sum of its 64 partial sums (no reassociation without -ffast-math): 64 dependent adds against 32 vector
// FMAs for a K = 512 row. Decode-step shapes (K 512..3072) stream ~1.5x faster with this loop (one core, under load).
static inline __m512 masked_load(const float *p, int64_t k, int64_t K) {
  const int64_t left = K - k;
  if (left >= 16) return _mm512_loadu_ps(p + k);
  return left > 0 ? _mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << left) - 1u), p + k) : _mm512_setzero_ps();
}

static void linear_nt_vector(const float *x, const float *w, float *y, int64_t N, int64_t K) {
  int64_t n = 0;
  for (; n + 4 <= N; n += 4) {
    const float *w0 = w + n * K, *w1 = w0 + K, *w2 = w1 + K, *w3 = w2 + K;
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
    int64_t k = 0;
    for (; k + 32 <= K; k += 32) {
      const __m512 x0 = _mm512_loadu_ps(x + k), x1 = _mm512_loadu_ps(x + k + 16);
      a0 = _mm512_fmadd_ps(_mm512_loadu_ps(w0 + k), x0, a0);
      a1 = _mm512_fmadd_ps(_mm512_loadu_ps(w1 + k), x0, a1);
      a2 = _mm512_fmadd_ps(_mm512_loadu_ps(w2 + k), x0, a2);
      a3 = _mm512_fmadd_ps(_mm512_loadu_ps(w3 + k), x0, a3);
      b0 = _mm512_fmadd_ps(_mm512_loadu_ps(w0 + k + 16), x1, b0);
      b1 = _mm512_fmadd_ps(_mm512_loadu_ps(w1 + k + 16), x1, b1);
      b2 = _mm512_fmadd_ps(_mm512_loadu_ps(w2 + k + 16), x1, b2);
      b3 = _mm512_fmadd_ps(_mm512_loadu_ps(w3 + k + 16), x1, b3);
    }
    if (k < K) {  // the last 1..31 columns, zero-filled past K
      const __m512 x0 = masked_load(x, k, K), x1 = masked_load(x, k + 16, K);
      a0 = _mm512_fmadd_ps(masked_load(w0, k, K), x0, a0);
      a1 = _mm512_fmadd_ps(masked_load(w1, k, K), x0, a1);
      a2 = _mm512_fmadd_ps(masked_load(w2, k, K), x0, a2);
      a3 = _mm512_fmadd_ps(masked_load(w3, k, K), x0, a3);
      b0 = _mm512_fmadd_ps(masked_load(w0, k + 16, K), x1, b0);
      b1 = _mm512_fmadd_ps(masked_load(w1, k + 16, K), x1, b1);
      b2 = _mm512_fmadd_ps(masked_load(w2, k + 16, K), x1, b2);
      b3 = _mm512_fmadd_ps(masked_load(w3, k + 16, K), x1, b3);
    }
    y[n] = _mm512_reduce_add_ps(_mm512_add_ps(a0, b0));
    y[n + 1] = _mm512_reduce_add_ps(_mm512_add_ps(a1, b1));
    y[n + 2] = _mm512_reduce_add_ps(_mm512_add_ps(a2, b2));
    y[n + 3] = _mm512_reduce_add_ps(_mm512_add_ps(a3, b3));
  }
  for (; n < N; n++) y[n] = dot(w + n * K, x, K);
}
#define LINEAR_NT_VECTOR 1
#elif defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
// The same loop with AVX2's 8-float vectors (16 columns per pass); the tail is loaded with a lane mask.
static inline __m256 masked_load(const float *p, int64_t k, int64_t K) {
  const int64_t left = K - k;
  if (left >= 8) return _mm256_loadu_ps(p + k);
  if (left <= 0) return _mm256_setzero_ps();
  const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_maskload_ps(p + k, _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(left)), lanes));
}

static void linear_nt_vector(const float *x, const float *w, float *y, int64_t N, int64_t K) {
  int64_t n = 0;
  for (; n + 4 <= N; n += 4) {
    const float *w0 = w + n * K, *w1 = w0 + K, *w2 = w1 + K, *w3 = w2 + K;
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
    int64_t k = 0;
    for (; k + 16 <= K; k += 16) {
      const __m256 x0 = _mm256_loadu_ps(x + k), x1 = _mm256_loadu_ps(x + k + 8);
      a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w0 + k), x0, a0);
      a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w1 + k), x0, a1);
      a2 = _mm256_fmadd_ps(_mm256_loadu_ps(w2 + k), x0, a2);
      a3 = _mm256_fmadd_ps(_mm256_loadu_ps(w3 + k), x0, a3);
      b0 = _mm256_fmadd_ps(_mm256_loadu_ps(w0 + k + 8), x1, b0);
      b1 = _mm256_fmadd_ps(_mm256_loadu_ps(w1 + k + 8), x1, b1);
      b2 = _mm256_fmadd_ps(_mm256_loadu_ps(w2 + k + 8), x1, b2);
      b3 = _mm256_fmadd_ps(_mm256_loadu_ps(w3 + k + 8), x1, b3);
    }
    if (k < K) {  // the last 1..15 columns, zero-filled past K
      const __m256 x0 = masked_load(x, k, K), x1 = masked_load(x, k + 8, K);
      a0 = _mm256_fmadd_ps(masked_load(w0, k, K), x0, a0);
      a1 = _mm256_fmadd_ps(masked_load(w1, k, K), x0, a1);
      a2 = _mm256_fmadd_ps(masked_load(w2, k, K), x0, a2);
      a3 = _mm256_fmadd_ps(masked_load(w3, k, K), x0, a3);
      b0 = _mm256_fmadd_ps(masked_load(w0, k + 8, K), x1, b0);
      b1 = _mm256_fmadd_ps(masked_load(w1, k + 8, K), x1, b1);
      b2 = _mm256_fmadd_ps(masked_load(w2, k + 8, K), x1, b2);
      b3 = _mm256_fmadd_ps(masked_load(w3, k + 8, K), x1, b3);
    }
    y[n] = hsum256(_mm256_add_ps(a0, b0));
    y[n + 1] = hsum256(_mm256_add_ps(a1, b1));
    y[n + 2] = hsum256(_mm256_add_ps(a2, b2));
    y[n + 3] = hsum256(_mm256_add_ps(a3, b3));
  }
  for (; n < N; n++) y[n] = dot(w + n * K, x, K);
}
#define LINEAR_NT_VECTOR 1
#endif

// ==== worker threads of the native kernels (native_pool; native.py: set_threads) ====================================
// The decode-step kernels (one or few rows of x) can split their output rows over threads: NativeSetThreads
// (native.set_threads, or MINDONE_TRANSFORMERS_NATIVE_THREADS); native.py sets the affinity mask's CPUs (at most 4)
// when it loads the library (1 thread here until then). With ~360 kernels per decode step a spinning worker once
// slowed SmolLM2's 2-core step 2.4x; with the fused layers (84 kernels) 2 threads are 1.25x faster (docs/performance.md).
// OpenMP was slower here (libgomp's threads spin for long and compete with MindSpore's pool): these are T - 1
// persistent workers that spin for a short while after each job (MINDONE_TRANSFORMERS_NATIVE_SPIN_US, default 50 us:
// a decode step launches the next product within tens of microseconds) and then sleep on a condition variable. The
// caller and the workers claim parts of the rows as they go (~a quarter of a thread's share each): a worker that
// starts late because the other core is busy leaves its share to the caller instead of making it wait. A call made while another is running (another MindSpore thread) runs
// single-threaded; a forked child starts without workers.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <pthread.h>
#include <sched.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define NATIVE_POOL_PAUSE() _mm_pause()
#else
#define NATIVE_POOL_PAUSE() std::this_thread::yield()
#endif
// The SSE control register (MXCSR: flush-to-zero, denormals-are-zero, rounding) is per thread, and a new thread
// copies its creator's: workers first started from a MindSpore thread that sets FTZ / DAZ would otherwise round
// denormals differently from a caller that does not, making results depend on the thread count. Each job carries
// the caller's MXCSR and the workers take it. Other architectures: not handled (their workers keep their own mode).
#if defined(__x86_64__) || (defined(__i386__) && defined(__SSE__))
// the control bits only: the low 6 are sticky exception flags, which differ between threads after any arithmetic
#define NATIVE_POOL_GET_FP_MODE() (_mm_getcsr() & ~0x3Fu)
#define NATIVE_POOL_SET_FP_MODE(mode) _mm_setcsr(mode)
#else
#define NATIVE_POOL_GET_FP_MODE() 0u
#define NATIVE_POOL_SET_FP_MODE(mode) ((void)(mode))
#endif

namespace native_pool {

typedef void (*Fn)(const void *ctx, int64_t begin, int64_t end);

struct State {
  std::mutex mu;
  std::condition_variable cv;
  std::atomic<uint64_t> generation{0};
  std::atomic<int> waiting{0}, workers{0}, threads{0};
  // the next unclaimed part of the current job: (job tag << kTagShift) | first index; rows done so far
  std::atomic<uint64_t> next{0};
  std::atomic<int64_t> done{0};
  std::atomic<bool> busy{false};
  // the caller's floating-point mode (MXCSR) for the current job; atomic: a late worker may read it while the next
  // caller writes it (that worker then finds another job's tag and runs nothing)
  std::atomic<unsigned> fp_mode{0};
  // the current job (written before `generation` is bumped)
  Fn fn = nullptr;
  const void *ctx = nullptr;
  int64_t n = 0, chunk = 0;
  int64_t spin_ns = 50000;
};

// never destroyed (workers may outlive static destructors); replaced in a forked child, which has no workers
static State *g_state = new State();
static State &state() { return *g_state; }

constexpr int kTagShift = 40;
constexpr uint64_t kIndexMask = (uint64_t(1) << kTagShift) - 1;  // an index of kIndexMask: the job is closed
constexpr uint64_t kTagMask = (uint64_t(1) << (64 - kTagShift)) - 1;  // job tags: the generation's low 24 bits

// claims and runs parts of the job tagged `tag` until none is left; a worker that woke late (another job posted
// since) finds another tag and runs nothing
static void work(State &s, uint64_t tag, Fn fn, const void *ctx, int64_t n, int64_t chunk) {
  for (;;) {
    uint64_t v = s.next.load(std::memory_order_acquire);
    if ((v >> kTagShift) != tag) return;
    const int64_t begin = static_cast<int64_t>(v & kIndexMask);
    if (begin >= n) return;
    if (!s.next.compare_exchange_weak(v, v + chunk, std::memory_order_acq_rel)) continue;
    const int64_t end = begin + chunk < n ? begin + chunk : n;
    fn(ctx, begin, end);
    s.done.fetch_add(end - begin, std::memory_order_acq_rel);
  }
}

static void after_fork_in_child() {
  State *fresh = new State();  // the parent's state is left as it was (its mutex may be held by a lost worker)
  fresh->threads.store(g_state->threads.load());
  fresh->spin_ns = g_state->spin_ns;
  g_state = fresh;
}

static int default_threads() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return CPU_COUNT(&set) > 0 ? CPU_COUNT(&set) : 1;
  return 1;
}

// `seen`: the generation when the worker was created (a job posted after it is the worker's first)
static void worker(State *state_ptr, int index, uint64_t seen) {
  State &s = *state_ptr;
  for (;;) {
    const auto start = std::chrono::steady_clock::now();
    int spins = 0;
    while (s.generation.load(std::memory_order_acquire) == seen) {
      NATIVE_POOL_PAUSE();
      if (++spins % 64 == 0 &&
          std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - start).count() >
              s.spin_ns) {
        std::unique_lock<std::mutex> lock(s.mu);
        s.waiting.fetch_add(1);
        s.cv.wait(lock, [&] { return s.generation.load() != seen; });
        s.waiting.fetch_sub(1);
        break;
      }
    }
    seen = s.generation.load(std::memory_order_acquire);
    // the fields may already be a later job's: `work` then finds a tag other than `seen`'s and does nothing
    const unsigned mode = s.fp_mode.load(std::memory_order_relaxed);
    if (mode != NATIVE_POOL_GET_FP_MODE()) NATIVE_POOL_SET_FP_MODE(mode);
    work(s, seen & kTagMask, s.fn, s.ctx, s.n, s.chunk);
  }
}

static int threads() {
  State &s = state();
  int t = s.threads.load(std::memory_order_relaxed);
  if (t <= 0) {
    t = 1;  // not set: single-threaded (see the top of this section)
    s.threads.store(t);
  }
  return t;
}

static void start_workers(int count) {
  State &s = state();
  static std::once_flag once;
  std::call_once(once, [&] {
    if (const char *v = std::getenv("MINDONE_TRANSFORMERS_NATIVE_SPIN_US")) s.spin_ns = std::atoll(v) * 1000;
    pthread_atfork(nullptr, nullptr, after_fork_in_child);
  });
  while (s.workers.load() < count) {
    std::thread(worker, &s, s.workers.load() + 1, s.generation.load()).detach();
    s.workers.fetch_add(1);
  }
}

// f(ctx, begin, end) over [0, n) cut into parts of whole multiples of `grain`, one part per thread
static void run(int64_t n, int64_t grain, Fn fn, const void *ctx) {
  State &s = state();
  const int t = threads();
  const int64_t units = (n + grain - 1) / grain;
  bool expected = false;
  if (t <= 1 || units <= 1 || !s.busy.compare_exchange_strong(expected, true)) {
    fn(ctx, 0, n);
    return;
  }
  const int parts = units < t ? static_cast<int>(units) : t;
  start_workers(parts - 1);
  s.fn = fn;
  s.ctx = ctx;
  s.n = n;
  // parts of about a quarter of a thread's share, so that a thread that starts late (the other core is busy) leaves
  // its share to the others instead of making them wait
  const int64_t per_part = (units + 4 * parts - 1) / (4 * parts);
  s.chunk = per_part * grain;
  s.fp_mode.store(NATIVE_POOL_GET_FP_MODE(), std::memory_order_relaxed);  // published by the `generation` store
  s.done.store(0, std::memory_order_relaxed);
  const uint64_t gen = s.generation.load() + 1, tag = gen & kTagMask;
  s.next.store(tag << kTagShift, std::memory_order_release);
  s.generation.store(gen);  // seq_cst: pairs with the workers' `waiting` increment before they sleep
  if (s.waiting.load() > 0) {
    { std::lock_guard<std::mutex> lock(s.mu); }
    s.cv.notify_all();
  }
  work(s, tag, fn, ctx, n, s.chunk);
  // parts claimed by workers and still running
  while (s.done.load(std::memory_order_acquire) < n) NATIVE_POOL_PAUSE();
  s.next.store((tag << kTagShift) | kIndexMask, std::memory_order_release);  // closed: late workers run nothing
  s.busy.store(false, std::memory_order_release);
}

}  // namespace native_pool

// a callable f(begin, end) over [0, n) on the native threads (parts: multiples of `grain`)
template <class F>
static void parallel_for(int64_t n, int64_t grain, const F &f) {
  native_pool::run(n, grain, [](const void *c, int64_t b, int64_t e) { (*static_cast<const F *>(c))(b, e); }, &f);
}

// Sets the number of threads the native kernels use (<= 0: the CPUs of the affinity mask). Called by native.py.
extern "C" int NativeSetThreads(int n) {
  native_pool::state().threads.store(n > 0 ? n : native_pool::default_threads());
  return native_pool::state().threads.load();
}
// ==== end of worker threads ==========================================================================================

// The elementwise and row kernels below (AdamW, the activations, the norms, the softmax, SwapAxes12, SumOfSquares)
// split their elements or rows over the native threads in parts of at least kParallelGrain floats: a decode step's
// call (one row of a few thousand floats) stays on the calling thread, a training or encoder call (10^5..10^7
// floats) is split. Every output element is computed by the same code whatever the part it falls in, and reductions
// over rows or elements are summed in an order that does not depend on the number of threads: results are
// bit-identical for any thread count.
constexpr int64_t kParallelGrain = 1 << 15;

// rows of K floats per part: at least kParallelGrain floats
static inline int64_t rows_grain(int64_t K) {
  return K <= 0 || K >= kParallelGrain ? 1 : (kParallelGrain + K - 1) / K;
}

// y (M, N) columns [n0, n1) = x (M, K) @ w (N, K)^T, as linear_nt_columns
static void linear_nt_range(const float *x, const float *w, float *y, int64_t M, int64_t N, int64_t K, int64_t n0,
                            int64_t n1) {
  for (int64_t n = n0; n < n1; n++) {
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
  parallel_for(N, 16, [&](int64_t n0, int64_t n1) {
#ifdef LINEAR_NT_VECTOR
    if (M == 1) {  // one row (a decode step): the four-rows-per-pass loop
      linear_nt_vector(x, w + n0 * K, y + n0, n1 - n0, K);
      return;
    }
#endif
    linear_nt_range(x, w, y, M, N, K, n0, n1);
  });
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

// Inputs: T >= 1 tensors' (param, exp_avg, exp_avg_sq, grad) (float32, contiguous, the four of a tensor the same
// number of elements), then hyper (kNumHyper float32), shared by all: nparam = 4 T + 2. Output: a 1-element dummy,
// left untouched. One call updates all the tensors of an optimizer group (F.adamw_update_group_): a PyNative op
// launch costs ~0.1 ms, a few hundred of them more than the update of a 100M-parameter model on two cores. The
// elements of all the tensors, one after the other, are split over the native threads (parts of kParallelGrain).
// The three state tensors are updated IN PLACE, through the input pointers, which MindSpore's AOT interface does not
// declare. That is safe only where this op is used: called op by op in PyNative from Python (F.adamw_update_,
// F.adamw_update_group_) on CPU, where an input pointer is the Parameter's own memory (no copy, no device transfer)
// and ops run in call order, so every later read of these tensors sees the update. Never call it inside
// mindspore.jit: a graph may reorder, fuse or reuse its inputs' memory, since nothing tells the compiler that they
// change.
extern "C" int AdamW(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
                     void *extra) {
  (void)stream;
  (void)extra;
  (void)dtypes;
  if (nparam < 6 || (nparam - 2) % 4 != 0) return 1;
  const int64_t T = (nparam - 2) / 4;
  std::vector<int64_t> start(T + 1, 0);  // tensor t: elements [start[t], start[t + 1]) of the whole
  for (int64_t t = 0; t < T; t++) {
    const int64_t n = num_elements(ndims[4 * t], shapes[4 * t]);
    for (int i = 1; i < 4; i++)
      if (num_elements(ndims[4 * t + i], shapes[4 * t + i]) != n) return 2;
    start[t + 1] = start[t] + n;
  }
  if (num_elements(ndims[4 * T], shapes[4 * T]) < kNumHyper) return 3;
  const float *h = static_cast<const float *>(params[4 * T]);
  const bool small_weight = h[kLerpWeight] < 0.5f;
  parallel_for(start[T], kParallelGrain, [&](int64_t b, int64_t e) {
    int64_t t = std::upper_bound(start.begin(), start.end(), b) - start.begin() - 1;
    for (; b < e; t++) {
      const int64_t i = b - start[t], n = (e < start[t + 1] ? e : start[t + 1]) - b;
      float *p = static_cast<float *>(params[4 * t]) + i;
      float *m = static_cast<float *>(params[4 * t + 1]) + i;
      float *v = static_cast<float *>(params[4 * t + 2]) + i;
      const float *grad = static_cast<const float *>(params[4 * t + 3]) + i;
      if (small_weight)
        adamw_loop<true>(p, m, v, grad, n, h);
      else
        adamw_loop<false>(p, m, v, grad, n, h);
      b += n;
    }
  });
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
// Split over the native threads (parts of kParallelGrain elements). Branch-free (both forms computed, one selected)
// so that the loop vectorises; exp is our own (2^k from exponent bits, Taylor series of the rest): no libm call in
// the loop.
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
  // 2^k from the bits of k + 1023 + 1.5 * 2^52, whose low 12 bits are k + 1023 (in 1..2046): a shift, where a
  // double -> int64 conversion has no AVX2 instruction and kept the loops calling this scalar on AVX2-only CPUs
  const int64_t biased = __builtin_bit_cast(int64_t, (k + 1023.0) + 6755399441055744.0);
  return p * __builtin_bit_cast(double, biased << 52);
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
  parallel_for(num_elements(ndims[0], shapes[0]), kParallelGrain,
               [&](int64_t b, int64_t e) { gelu_erf::forward(x + b, y + b, e - b); });
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
  parallel_for(n, kParallelGrain, [&](int64_t b, int64_t e) { gelu_erf::backward(x + b, dy + b, dx + b, e - b); });
  return 0;
}
// ==== end of exact GELU ==============================================================================================


// =====================================================================================================================
// Weight-only quantized linear layers (backend/quantization.py: QuantizedLinear; native.py: "quantized matmul" block)
// =====================================================================================================================
// Weights W (N, K) are stored in groups of G consecutive elements of a row (G a multiple of 32, dividing K), with a
// float32 scale per group (and for int4 a float32 offset "min" per group):
//   int8: q (N, K) int8,                 W[n, k] = scale[n, k / G] * q[n, k]                  (GGUF Q8_0 when G = 32)
//   int4: q (N, K / 2) uint8 (nibbles),  W[n, k] = scale[n, k / G] * q4[n, k] + min[n, k / G] (GGUF Q4_0 / Q4_1 when
//         G = 32; Q4_K's 32-element sub-blocks once their nibbles are regrouped)
// The nibbles are laid out as GGUF's Q4 blocks, per 32-element chunk of a row: byte j (0..15) of a chunk holds
// element j in its low nibble and element j + 16 in its high nibble.
// The products use float32 activations: x @ W^T is computed as
//   y[m, n] = sum_g scale[n, g] * (sum_{k in g} q[n, k] * x[m, k]) + min[n, g] * (sum_{k in g} x[m, k])
// i.e. the same value as dequantising W and multiplying, up to float32 summation order (no activation quantisation).
// Single-threaded. AVX-512 / AVX2 intrinsics when the compiler targets them (-march=native), else plain
// loops. Scratch memory (per-group sums of x) is a thread_local buffer that only grows: no allocation per call.
#include <vector>
#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

#if !defined(__AVX512F__)  // the AVX-512 kernels fold the mins into lookup tables instead
static float *group_sums_buffer(int64_t n) {
  thread_local std::vector<float> buffer;
  if (static_cast<int64_t>(buffer.size()) < n) buffer.resize(n);
  return buffer.data();
}

// sum of each group of G elements of the M rows of x (M, K)
static void group_sums(const float *x, int64_t M, int64_t K, int64_t G, float *out) {
  for (int64_t m = 0; m < M; m++)
    for (int64_t g = 0; g < K / G; g++) {
      const float *p = x + m * K + g * G;
      float s[16] = {0};
      for (int64_t k = 0; k < G; k += 16)
        for (int j = 0; j < 16; j++) s[j] += p[k + j];
      float t = 0.0f;
      for (int j = 0; j < 16; j++) t += s[j];
      out[m * (K / G) + g] = t;
    }
}
#endif

#if defined(__AVX512F__)
#define QUANT_TWO_ROWS 1
static inline float hsum(__m512 v) { return _mm512_reduce_add_ps(v); }

// 16-entry table of a group's dequantised values scale * q + min, rounded as DequantInt4 rounds
static inline __m512 q4_table(float scale, float mn) {
  const __m512 iota = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  return _mm512_add_ps(_mm512_mul_ps(_mm512_set1_ps(scale), iota), _mm512_set1_ps(mn));
}

// dots of two int4 rows (q0, q1: K / 2 bytes each; s*, m*: their groups' scales and mins) with x. vpermps looks each
// nibble up in its group's table (it reads only the low 4 bits of each index, so the low nibble needs no mask): per
// 32 weights one widening load, one shift, two lookups, two FMAs; two rows at once share the loads of x and give
// four independent FMA chains.
static inline void q4_rows2(const uint8_t *q0, const uint8_t *q1, const float *s0, const float *s1, const float *m0,
                            const float *m1, const float *x, int64_t K, int64_t G, float *out0, float *out1) {
  __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), b0 = _mm512_setzero_ps(), b1 = _mm512_setzero_ps();
  for (int64_t g = 0; g < K / G; g++) {
    const __m512 t0 = q4_table(s0[g], m0[g]), t1 = q4_table(s1[g], m1[g]);
    for (int64_t c = g * G; c < (g + 1) * G; c += 32) {
      const __m512 x0 = _mm512_loadu_ps(x + c), x1 = _mm512_loadu_ps(x + c + 16);
      const __m512i w0 = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i *>(q0 + c / 2)));
      const __m512i w1 = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i *>(q1 + c / 2)));
      a0 = _mm512_fmadd_ps(_mm512_permutexvar_ps(w0, t0), x0, a0);
      a1 = _mm512_fmadd_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(w0, 4), t0), x1, a1);
      b0 = _mm512_fmadd_ps(_mm512_permutexvar_ps(w1, t1), x0, b0);
      b1 = _mm512_fmadd_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(w1, 4), t1), x1, b1);
    }
  }
  *out0 = hsum(_mm512_add_ps(a0, a1));
  *out1 = hsum(_mm512_add_ps(b0, b1));
}

static inline float q4_row_dot(const uint8_t *q, const float *scale, const float *mn, const float *x,
                               const float *xsum, int64_t K, int64_t G) {
  (void)xsum;
  float y0, y1;
  q4_rows2(q, q, scale, scale, mn, mn, x, K, G, &y0, &y1);
  return y0;
}

// dots of two int8 rows with x: per group the integer-valued products are summed, then scaled once
static inline void q8_rows2(const int8_t *q0, const int8_t *q1, const float *s0, const float *s1, const float *x,
                            int64_t K, int64_t G, float *out0, float *out1) {
  __m512 a = _mm512_setzero_ps(), b = _mm512_setzero_ps();
  for (int64_t g = 0; g < K / G; g++) {
    __m512 p0 = _mm512_setzero_ps(), p1 = _mm512_setzero_ps(), r0 = _mm512_setzero_ps(), r1 = _mm512_setzero_ps();
    for (int64_t c = g * G; c < (g + 1) * G; c += 32) {
      const __m512 x0 = _mm512_loadu_ps(x + c), x1 = _mm512_loadu_ps(x + c + 16);
      const __m128i *u = reinterpret_cast<const __m128i *>(q0 + c), *v = reinterpret_cast<const __m128i *>(q1 + c);
      p0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(u))), x0, p0);
      p1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(u + 1))), x1, p1);
      r0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(v))), x0, r0);
      r1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(v + 1))), x1, r1);
    }
    a = _mm512_fmadd_ps(_mm512_set1_ps(s0[g]), _mm512_add_ps(p0, p1), a);
    b = _mm512_fmadd_ps(_mm512_set1_ps(s1[g]), _mm512_add_ps(r0, r1), b);
  }
  *out0 = hsum(a);
  *out1 = hsum(b);
}

static inline float q8_row_dot(const int8_t *q, const float *scale, const float *x, int64_t K, int64_t G) {
  float y0, y1;
  q8_rows2(q, q, scale, scale, x, K, G, &y0, &y1);
  return y0;
}
#elif defined(__AVX2__) && defined(__FMA__)
static inline float q4_row_dot(const uint8_t *q, const float *scale, const float *mn, const float *x,
                               const float *xsum, int64_t K, int64_t G) {
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  const __m256i low = _mm256_set1_epi32(15);
  float offset = 0.0f;
  const int64_t groups = K / G;
  for (int64_t g = 0; g < groups; g++) {
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    for (int64_t c = g * G; c < (g + 1) * G; c += 32) {
      const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i *>(q + c / 2));
      const __m256i b0 = _mm256_cvtepu8_epi32(bytes);
      const __m256i b1 = _mm256_cvtepu8_epi32(_mm_srli_si128(bytes, 8));
      s0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_and_si256(b0, low)), _mm256_loadu_ps(x + c), s0);
      s1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_and_si256(b1, low)), _mm256_loadu_ps(x + c + 8), s1);
      s0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(b0, 4)), _mm256_loadu_ps(x + c + 16), s0);
      s1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(b1, 4)), _mm256_loadu_ps(x + c + 24), s1);
    }
    const __m256 sc = _mm256_set1_ps(scale[g]);
    acc0 = _mm256_fmadd_ps(sc, s0, acc0);
    acc1 = _mm256_fmadd_ps(sc, s1, acc1);
    offset = fmadd(mn[g], xsum[g], offset);
  }
  return hsum256(_mm256_add_ps(acc0, acc1)) + offset;
}

static inline float q8_row_dot(const int8_t *q, const float *scale, const float *x, int64_t K, int64_t G) {
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  const int64_t groups = K / G;
  for (int64_t g = 0; g < groups; g++) {
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    for (int64_t c = g * G; c < (g + 1) * G; c += 16) {
      const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i *>(q + c));
      s0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(bytes)), _mm256_loadu_ps(x + c), s0);
      s1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(bytes, 8))),
                           _mm256_loadu_ps(x + c + 8), s1);
    }
    const __m256 sc = _mm256_set1_ps(scale[g]);
    acc0 = _mm256_fmadd_ps(sc, s0, acc0);
    acc1 = _mm256_fmadd_ps(sc, s1, acc1);
  }
  return hsum256(_mm256_add_ps(acc0, acc1));
}
#else
static inline float q4_row_dot(const uint8_t *q, const float *scale, const float *mn, const float *x,
                               const float *xsum, int64_t K, int64_t G) {
  float acc = 0.0f;
  for (int64_t g = 0; g < K / G; g++) {
    float s[16] = {0};
    for (int64_t c = g * G; c < (g + 1) * G; c += 32)
      for (int j = 0; j < 16; j++) {
        s[j] = fmadd(static_cast<float>(q[c / 2 + j] & 15), x[c + j], s[j]);
        s[j] = fmadd(static_cast<float>(q[c / 2 + j] >> 4), x[c + 16 + j], s[j]);
      }
    float t = 0.0f;
    for (int j = 0; j < 16; j++) t += s[j];
    acc = fmadd(scale[g], t, acc);
    acc = fmadd(mn[g], xsum[g], acc);
  }
  return acc;
}

static inline float q8_row_dot(const int8_t *q, const float *scale, const float *x, int64_t K, int64_t G) {
  float acc = 0.0f;
  for (int64_t g = 0; g < K / G; g++) {
    float s[16] = {0};
    for (int64_t c = g * G; c < (g + 1) * G; c += 16)
      for (int j = 0; j < 16; j++) s[j] = fmadd(static_cast<float>(q[c + j]), x[c + j], s[j]);
    float t = 0.0f;
    for (int j = 0; j < 16; j++) t += s[j];
    acc = fmadd(scale[g], t, acc);
  }
  return acc;
}
#endif

// One packed weight W (N, K) among a kernel's inputs: q at params[first], scale at first + 1, min at first + 2 (int4).
// The scales (and mins) are float32 or float16 (GGUF's own Q8_0 / Q4_0 / Q4_1 scales, kept as stored: a decode step
// streams 20 bytes per int4 block of 32 instead of 24). The product loops read float32 (`scale`, `mn`); float16 ones
// (`scale_h`, `mn_h`) are widened a few rows at a time by `with_float32_scales`.
struct PackedWeight {
  const void *q;
  const float *scale, *mn;
  const uint16_t *scale_h, *mn_h;
  int64_t N, G;
};

static bool is_float16(const char **dtypes, int i) {
  return dtypes != nullptr && dtypes[i] != nullptr && std::strcmp(dtypes[i], "float16") == 0;
}

// checks the shapes of the weight at params[first..] against x's K: q (N, K) int8 or (N, K / 2) uint8, scale [, min]
// (N, K / G) float32 or float16 (both the same), G a multiple of 32; 0 or an error code
static int packed_weight(void **params, int *ndims, int64_t **shapes, const char **dtypes, int first, int bits,
                         int64_t K, PackedWeight *w) {
  const int64_t packed_per_row = bits == 8 ? 1 : 2;
  if (ndims[first] != 2 || ndims[first + 1] != 2 || shapes[first][1] * packed_per_row != K) return 2;
  const int64_t N = shapes[first][0], groups = shapes[first + 1][1];
  if (shapes[first + 1][0] != N || groups <= 0 || K % groups) return 3;
  if ((K / groups) % 32) return 4;
  if (bits == 4 && (ndims[first + 2] != 2 || shapes[first + 2][0] != N || shapes[first + 2][1] != groups)) return 5;
  const bool half = is_float16(dtypes, first + 1);
  if (bits == 4 && is_float16(dtypes, first + 2) != half) return 5;
  *w = PackedWeight{params[first], nullptr, nullptr, nullptr, nullptr, N, K / groups};
  if (half) {
    w->scale_h = static_cast<const uint16_t *>(params[first + 1]);
    w->mn_h = bits == 4 ? static_cast<const uint16_t *>(params[first + 2]) : nullptr;
  } else {
    w->scale = static_cast<const float *>(params[first + 1]);
    w->mn = bits == 4 ? static_cast<const float *>(params[first + 2]) : nullptr;
  }
  return 0;
}

// IEEE float16 -> float32, exactly (F16C's vcvtph2ps where the CPU has it)
static void widen_half(const uint16_t *h, float *out, int64_t n) {
  int64_t i = 0;
#if defined(__F16C__)
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(out + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i *>(h + i))));
#endif
  for (; i < n; i++) {
    const uint32_t sign = static_cast<uint32_t>(h[i] & 0x8000) << 16, e = (h[i] >> 10) & 31, m = h[i] & 1023;
    uint32_t bits;
    if (e == 31) {
      bits = sign | 0x7F800000u | (m << 13);  // inf / nan
    } else if (e != 0) {
      bits = sign | ((e + 112) << 23) | (m << 13);
    } else if (m == 0) {
      bits = sign;
    } else {  // subnormal: m * 2^-24, exact in float32
      const float v = static_cast<float>(m) * 5.9604644775390625e-08f;
      std::memcpy(&bits, &v, 4);
      bits |= sign;
    }
    std::memcpy(out + i, &bits, 4);
  }
}

// Calls f(rows, r0, r1) over rows [n0, n1) of w, with `rows` a PackedWeight whose row 0 is w's row r0, rows.N =
// r1 - r0 and float32 scales: one call for float32 scales; for float16 ones, parts of kHalfRows rows (an even number:
// the product loops' pairs of rows stay the same) whose scales are widened into a thread-local buffer that stays in
// L1, so the float16 scales are what is streamed from memory.
template <class F>
static void with_float32_scales(const PackedWeight &w, int bits, int64_t K, int64_t n0, int64_t n1, const F &f) {
  const int64_t groups = K / w.G, row_bytes = bits == 8 ? K : K / 2;
  const uint8_t *q = static_cast<const uint8_t *>(w.q);
  if (w.scale_h == nullptr) {
    f(PackedWeight{q + n0 * row_bytes, w.scale + n0 * groups, w.mn ? w.mn + n0 * groups : nullptr, nullptr, nullptr,
                   n1 - n0, w.G},
      n0, n1);
    return;
  }
  constexpr int64_t kHalfRows = 32;
  thread_local std::vector<float> buffer;
  if (static_cast<int64_t>(buffer.size()) < 2 * kHalfRows * groups) buffer.resize(2 * kHalfRows * groups);
  for (int64_t r0 = n0; r0 < n1; r0 += kHalfRows) {
    const int64_t r1 = r0 + kHalfRows < n1 ? r0 + kHalfRows : n1, count = (r1 - r0) * groups;
    float *scale = buffer.data(), *mn = scale + kHalfRows * groups;
    widen_half(w.scale_h + r0 * groups, scale, count);
    if (w.mn_h) widen_half(w.mn_h + r0 * groups, mn, count);
    f(PackedWeight{q + r0 * row_bytes, scale, w.mn_h ? mn : nullptr, nullptr, nullptr, r1 - r0, w.G}, r0, r1);
  }
}

// y (M, ldy) columns [0, N) = x (M, K) @ W^T for an int8 W
static void qlinear8(const float *x, const PackedWeight &w, float *y, int64_t M, int64_t K, int64_t ldy) {
  const int8_t *q = static_cast<const int8_t *>(w.q);
  const int64_t N = w.N, G = w.G, groups = K / G;
  int64_t n = 0;
#ifdef QUANT_TWO_ROWS
  for (; n + 2 <= N; n += 2)
    for (int64_t m = 0; m < M; m++)
      q8_rows2(q + n * K, q + (n + 1) * K, w.scale + n * groups, w.scale + (n + 1) * groups, x + m * K, K, G,
               y + m * ldy + n, y + m * ldy + n + 1);
#endif
  for (; n < N; n++)
    for (int64_t m = 0; m < M; m++) y[m * ldy + n] = q8_row_dot(q + n * K, w.scale + n * groups, x + m * K, K, G);
}

// y (M, ldy) columns [0, N) = x (M, K) @ W^T for an int4 W; xsum: x's per-group sums (unused with AVX-512)
static void qlinear4(const float *x, const float *xsum, const PackedWeight &w, float *y, int64_t M, int64_t K,
                     int64_t ldy) {
  const uint8_t *q = static_cast<const uint8_t *>(w.q);
  const int64_t N = w.N, G = w.G, groups = K / G;
  int64_t n = 0;
#ifdef QUANT_TWO_ROWS
  for (; n + 2 <= N; n += 2)
    for (int64_t m = 0; m < M; m++)
      q4_rows2(q + n * K / 2, q + (n + 1) * K / 2, w.scale + n * groups, w.scale + (n + 1) * groups,
               w.mn + n * groups, w.mn + (n + 1) * groups, x + m * K, K, G, y + m * ldy + n, y + m * ldy + n + 1);
#endif
  for (; n < N; n++)
    for (int64_t m = 0; m < M; m++)
      y[m * ldy + n] = q4_row_dot(q + n * K / 2, w.scale + n * groups, w.mn + n * groups, x + m * K,
                                  xsum + m * groups, K, G);
}

// x's per-group sums for the int4 kernels without AVX-512 (which need them for the mins), else nullptr; G is the
// group size of every int4 weight of the call (the fused kernels require equal group sizes)
static const float *int4_group_sums(const float *x, int64_t M, int64_t K, int64_t G) {
#ifdef QUANT_TWO_ROWS
  (void)x, (void)M, (void)K, (void)G;
  return nullptr;
#else
  float *xsum = group_sums_buffer(M * (K / G));
  group_sums(x, M, K, G, xsum);
  return xsum;
#endif
}

// y (M, ldy) columns [0, W.N) = x @ W^T, int8 or int4
static void qlinear(int bits, const float *x, const float *xsum, const PackedWeight &w, float *y, int64_t M,
                    int64_t K, int64_t ldy) {
  with_float32_scales(w, bits, K, 0, w.N, [&](const PackedWeight &rows, int64_t r0, int64_t) {
    if (bits == 8)
      qlinear8(x, rows, y + r0, M, K, ldy);
    else
      qlinear4(x, xsum, rows, y + r0, M, K, ldy);
  });
}

// y = x @ W^T. Inputs: x (..., K), q, scale[, min]. Output: y (..., N).
static int quantized_linear_kernel(int bits, int nparam, void **params, int *ndims, int64_t **shapes,
                                   const char **dtypes) {
  if (nparam != (bits == 8 ? 4 : 5)) return 1;
  const int64_t K = shapes[0][ndims[0] - 1], M = num_elements(ndims[0] - 1, shapes[0]);
  PackedWeight w;
  if (int err = packed_weight(params, ndims, shapes, dtypes, 1, bits, K, &w)) return err;
  const float *x = static_cast<const float *>(params[0]);
  qlinear(bits, x, bits == 4 ? int4_group_sums(x, M, K, w.G) : nullptr, w, static_cast<float *>(params[nparam - 1]),
          M, K, w.N);
  return 0;
}

extern "C" int QLinearInt8(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
                           void *extra) {
  (void)stream, (void)extra, (void)dtypes;
  return quantized_linear_kernel(8, nparam, params, ndims, shapes, dtypes);
}

extern "C" int QLinearInt4(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
                           void *extra) {
  (void)stream, (void)extra, (void)dtypes;
  return quantized_linear_kernel(4, nparam, params, ndims, shapes, dtypes);
}

// ---- fused products of a decode step (quantization.py: fused_projections, fused_silu_gate_up) -----------------------
// One kernel launch instead of several: in a compiled decode step each MindSpore kernel costs ~10-20 us of launch
// overhead besides its work, as much as a small packed product itself.

// x @ Wi^T for three weights of the same bits (attention's q / k / v). Inputs: x (..., K), then per weight q, scale
// [, min]. Outputs: y1 (..., N1), y2 (..., N2), y3 (..., N3).
static int quantized_linear3_kernel(int bits, int nparam, void **params, int *ndims, int64_t **shapes,
                                    const char **dtypes) {
  const int per = bits == 8 ? 2 : 3;
  if (nparam != 1 + 3 * per + 3) return 1;
  const int64_t K = shapes[0][ndims[0] - 1], M = num_elements(ndims[0] - 1, shapes[0]);
  PackedWeight w[3];
  for (int i = 0; i < 3; i++) {
    if (int err = packed_weight(params, ndims, shapes, dtypes, 1 + i * per, bits, K, &w[i])) return err;
    if (w[i].G != w[0].G) return 6;
  }
  const float *x = static_cast<const float *>(params[0]);
  const float *xsum = bits == 4 ? int4_group_sums(x, M, K, w[0].G) : nullptr;
  for (int i = 0; i < 3; i++) qlinear(bits, x, xsum, w[i], static_cast<float *>(params[1 + 3 * per + i]), M, K, w[i].N);
  return 0;
}

extern "C" int QLinear3Int8(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                            void *stream, void *extra) {
  (void)stream, (void)extra, (void)dtypes;
  return quantized_linear3_kernel(8, nparam, params, ndims, shapes, dtypes);
}

extern "C" int QLinear3Int4(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                            void *stream, void *extra) {
  (void)stream, (void)extra, (void)dtypes;
  return quantized_linear3_kernel(4, nparam, params, ndims, shapes, dtypes);
}

static float *gate_buffer(int64_t n) {
  thread_local std::vector<float> buffer;
  if (static_cast<int64_t>(buffer.size()) < n) buffer.resize(n);
  return buffer.data();
}

// silu(x @ Wg^T) * (x @ Wu^T), silu(g) = g * sigmoid(g) rounded as MindSpore's SiLU (sigmoid, then the two
// products). Inputs: x (..., K), then q, scale[, min] of the gate weight, then those of the up weight (same N, bits
// and group size). Output: y (..., N).
static int silu_gate_up_kernel(int bits, int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes) {
  const int per = bits == 8 ? 2 : 3;
  if (nparam != 1 + 2 * per + 1) return 1;
  const int64_t K = shapes[0][ndims[0] - 1], M = num_elements(ndims[0] - 1, shapes[0]);
  PackedWeight gate, up;
  if (int err = packed_weight(params, ndims, shapes, dtypes, 1, bits, K, &gate)) return err;
  if (int err = packed_weight(params, ndims, shapes, dtypes, 1 + per, bits, K, &up)) return err;
  if (gate.N != up.N || gate.G != up.G) return 6;
  const int64_t N = gate.N;
  const float *x = static_cast<const float *>(params[0]);
  const float *xsum = bits == 4 ? int4_group_sums(x, M, K, gate.G) : nullptr;
  float *y = static_cast<float *>(params[nparam - 1]);
  float *g = gate_buffer(M * N);
  qlinear(bits, x, xsum, gate, g, M, K, N);
  qlinear(bits, x, xsum, up, y, M, K, N);
  for (int64_t i = 0; i < M * N; i++) {
    const float sigmoid = 1.0f / (1.0f + std::exp(-g[i]));
    y[i] = (g[i] * sigmoid) * y[i];
  }
  return 0;
}

extern "C" int QSiluGateUpInt8(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                               void *stream, void *extra) {
  (void)stream, (void)extra, (void)dtypes;
  return silu_gate_up_kernel(8, nparam, params, ndims, shapes, dtypes);
}

extern "C" int QSiluGateUpInt4(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                               void *stream, void *extra) {
  (void)stream, (void)extra, (void)dtypes;
  return silu_gate_up_kernel(4, nparam, params, ndims, shapes, dtypes);
}

static void rms_norm_rows(const float *x, const float *w, float eps, float *y, int64_t M, int64_t K);

// RMSNorm of float32 rows: y = w * (x * rsqrt(mean(x^2) + eps)), rounded operation by operation as
// functional.rms_norm's MindSpore ops (the mean's summation order aside). Inputs: x (..., K), w (K), eps (1).
// Output: y (..., K). Replaces six kernel launches of a decode step by one.
extern "C" int RMSNorm(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
                       void *extra) {
  (void)stream, (void)extra, (void)dtypes;
  if (nparam != 4) return 1;
  const int64_t K = shapes[0][ndims[0] - 1], M = num_elements(ndims[0] - 1, shapes[0]);
  if (num_elements(ndims[1], shapes[1]) != K || num_elements(ndims[2], shapes[2]) != 1) return 2;
  rms_norm_rows(static_cast<const float *>(params[0]), static_cast<const float *>(params[1]),
                *static_cast<const float *>(params[2]), static_cast<float *>(params[3]), M, K);
  return 0;
}

// y (M, K) = RMSNorm of the rows of x (M, K) with weight w (K): the RMSNorm kernel's loops (also used by the fused
// decoder-layer kernels of the int8-activation section, so that they round as the separate kernel)
static void rms_norm_rows(const float *x, const float *w, float eps, float *y, int64_t M, int64_t K) {
  for (int64_t m = 0; m < M; m++) {
    const float *row = x + m * K;
    float acc[16] = {0};
    int64_t k = 0;
    for (; k + 16 <= K; k += 16)
      for (int j = 0; j < 16; j++) acc[j] += row[k + j] * row[k + j];
    float s = 0.0f;
    for (; k < K; k++) s += row[k] * row[k];
    for (int j = 0; j < 16; j++) s += acc[j];
    const float r = 1.0f / std::sqrt(s / static_cast<float>(K) + eps);
    float *out = y + m * K;
    for (k = 0; k < K; k++) out[k] = w[k] * (row[k] * r);
  }
}

// params[i] as float32 (n values): the input itself, or its float16 values widened into thread-local buffer `slot`
static const float *float32_scales(void **params, const char **dtypes, int i, int64_t n, int slot) {
  if (!is_float16(dtypes, i)) return static_cast<const float *>(params[i]);
  thread_local std::vector<float> buffers[2];
  buffers[slot].resize(n);
  widen_half(static_cast<const uint16_t *>(params[i]), buffers[slot].data(), n);
  return buffers[slot].data();
}

// W (N, K) float32 from its int8 form. Inputs: q, scale (float32 or float16). Output: W.
extern "C" int DequantInt8(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
                           void *extra) {
  (void)stream;
  (void)extra;
  if (nparam != 3 || ndims[0] != 2 || ndims[1] != 2) return 1;
  const int64_t N = shapes[0][0], K = shapes[0][1], groups = shapes[1][1];
  if (shapes[1][0] != N || groups <= 0 || K % groups) return 2;
  const int64_t G = K / groups;
  const int8_t *q = static_cast<const int8_t *>(params[0]);
  const float *scale = float32_scales(params, dtypes, 1, N * groups, 0);
  float *w = static_cast<float *>(params[2]);
  for (int64_t n = 0; n < N; n++)
    for (int64_t k = 0; k < K; k++) w[n * K + k] = scale[n * groups + k / G] * static_cast<float>(q[n * K + k]);
  return 0;
}

// W (N, K) float32 from its int4 form, rounded as scale * q + min in two steps (as the NumPy / MindSpore
// dequantisation). Inputs: q, scale, min (both float32 or both float16). Output: W.
extern "C" int DequantInt4(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
                           void *extra) {
  (void)stream;
  (void)extra;
  if (nparam != 4 || ndims[0] != 2 || ndims[1] != 2) return 1;
  const int64_t N = shapes[0][0], K = shapes[0][1] * 2, groups = shapes[1][1];
  if (shapes[1][0] != N || groups <= 0 || K % groups || (K / groups) % 32) return 2;
  const int64_t G = K / groups;
  const uint8_t *q = static_cast<const uint8_t *>(params[0]);
  if (is_float16(dtypes, 1) != is_float16(dtypes, 2)) return 3;
  const float *scale = float32_scales(params, dtypes, 1, N * groups, 0);
  const float *mn = float32_scales(params, dtypes, 2, N * groups, 1);
  float *w = static_cast<float *>(params[3]);
  for (int64_t n = 0; n < N; n++)
    for (int64_t c = 0; c < K; c += 32) {
      const float s = scale[n * groups + c / G], o = mn[n * groups + c / G];
      const uint8_t *b = q + (n * K + c) / 2;
      float *out = w + n * K + c;
      for (int j = 0; j < 16; j++) {
        const float lo = s * static_cast<float>(b[j] & 15), hi = s * static_cast<float>(b[j] >> 4);
        out[j] = lo + o;
        out[j + 16] = hi + o;
      }
    }
  return 0;
}

// --- decode-step attention products (backend/functional.py: attention, for a few query rows) ------------------------
// With the weights streamed in 4 bits, the attention's two small batched products per layer become a visible part of
// a decode step: MindSpore's CPU BatchMatMul costs ~50-200 us on (3 x 64) @ (64 x 256) whatever the work (it repacks
// the whole key/value block). These loops read each key / value row once per batch.

// c (B, M, N) = a (B, M, K) @ b (B, N, K)^T, float32, contiguous. Inputs: a, b. Output: c.
extern "C" int BatchMatMulNT(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                             void *stream, void *extra) {
  (void)stream;
  (void)extra;
  (void)dtypes;
  if (nparam != 3 || ndims[0] < 2 || ndims[1] != ndims[0]) return 1;
  const int nd = ndims[0];
  const int64_t M = shapes[0][nd - 2], K = shapes[0][nd - 1], N = shapes[1][nd - 2];
  const int64_t B = num_elements(nd - 2, shapes[0]);
  if (shapes[1][nd - 1] != K || num_elements(nd - 2, shapes[1]) != B) return 2;
  const float *a = static_cast<const float *>(params[0]);
  const float *b = static_cast<const float *>(params[1]);
  float *c = static_cast<float *>(params[2]);
  for (int64_t i = 0; i < B; i++) linear_nt_columns(a + i * M * K, b + i * N * K, c + i * M * N, M, N, K);
  return 0;
}

// c (B, M, D) = a (B, M, N) @ b (B, N, D), float32, contiguous. Inputs: a, b. Output: c.
extern "C" int BatchMatMulNN(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                             void *stream, void *extra) {
  (void)stream;
  (void)extra;
  (void)dtypes;
  if (nparam != 3 || ndims[0] < 2 || ndims[1] != ndims[0]) return 1;
  const int nd = ndims[0];
  const int64_t M = shapes[0][nd - 2], N = shapes[0][nd - 1], D = shapes[1][nd - 1];
  const int64_t B = num_elements(nd - 2, shapes[0]);
  if (shapes[1][nd - 2] != N || num_elements(nd - 2, shapes[1]) != B) return 2;
  const float *a = static_cast<const float *>(params[0]);
  const float *b = static_cast<const float *>(params[1]);
  float *c = static_cast<float *>(params[2]);
  for (int64_t i = 0; i < B; i++) {
    const float *ai = a + i * M * N, *bi = b + i * N * D;
    float *ci = c + i * M * D;
    for (int64_t m = 0; m < M; m++) {
      float *row = ci + m * D;
      for (int64_t d = 0; d < D; d++) row[d] = 0.0f;
      for (int64_t n = 0; n < N; n++) {
        const float w = ai[m * N + n];
        const float *v = bi + n * D;
        for (int64_t d = 0; d < D; d++) row[d] = fmadd(w, v[d], row[d]);
      }
    }
  }
  return 0;
}
// A decode step's whole attention for few query rows in one call (functional.attention): the products above plus
// the scale, the additive mask and the softmax, which are three more MindSpore kernels per layer otherwise.
//   q (B, Hk, R, D): the R = n_rep * Sq query rows of each kv head (row r: head hk * n_rep + r / Sq, position
//   r % Sq); k (B, Hk, S, D), v (B, Hk, S, Dv); mask (Bm, Hm, Qm, S) float32 additive, each of Bm / Hm / Qm either 1
//   (broadcast) or B / Hk * n_rep / Sq; scale (1) float32 (1.0: not applied).
// Outputs: out (B, Hk, R, Dv) = softmax(q k^T * scale + mask) v and the weights (B, Hk, R, S).
// Rounded as the separate route: the scores by `dot` (as BatchMatMulNT), scale then mask, softmax as
// exp(s - max) / sum, the weighted sum of v in key order (as BatchMatMulNN).
// The loops, for 4-D shapes[0..3] of q, k, v, mask (also used by the fused decoder-layer kernel of the
// int8-activation section); 0 or an error code.
constexpr float kMaskedBelow = -1e30f;  // an additive mask at or below this closes a slot (HF: finfo(float32).min)

static int decode_attention(int64_t *const *shapes, const float *q, const float *k, const float *v,
                            const float *mask, float scale, float *out, float *weights) {
  const int64_t B = shapes[0][0], Hk = shapes[0][1], R = shapes[0][2], D = shapes[0][3];
  const int64_t S = shapes[1][2], Dv = shapes[2][3];
  if (shapes[1][0] != B || shapes[1][1] != Hk || shapes[1][3] != D) return 3;
  if (shapes[2][0] != B || shapes[2][1] != Hk || shapes[2][2] != S) return 3;
  const int64_t Bm = shapes[3][0], Hm = shapes[3][1], Qm = shapes[3][2];
  if (shapes[3][3] != S || (Bm != 1 && Bm != B)) return 4;
  // the query positions per head: Qm when the mask has them, else found from the heads (Hm) or 1
  int64_t Sq = Qm;
  if (Sq == 1 && Hm > 1) Sq = R * Hk / Hm;
  if (Sq <= 0 || R % Sq) return 5;
  const int64_t n_rep = R / Sq, H = Hk * n_rep;
  if ((Hm != 1 && Hm != H) || (Qm != 1 && Qm != Sq)) return 5;
  // rows (batch, kv head, query row) are independent: split over the native threads (each computed alone, so the
  // numbers do not depend on the thread count)
  parallel_for(B * Hk * R, rows_grain(S * (D + Dv)), [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; i++) {
      const int64_t head = i / R, r = i % R, bi = head / Hk, hk = head % Hk;
      const float *kh = k + head * S * D, *vh = v + head * S * Dv;
      const int64_t h = hk * n_rep + r / Sq, pos = r % Sq;
      const float *mrow = mask + (((Bm == 1 ? 0 : bi) * Hm + (Hm == 1 ? 0 : h)) * Qm + (Qm == 1 ? 0 : pos)) * S;
      const float *qr = q + (head * R + r) * D;
      float *w = weights + (head * R + r) * S;
      float mx = -INFINITY;
      // Slots masked with HF's finfo.min (a static cache's unused slots, padding) are not read when the row has an
      // open slot: their score rounds to the mask value itself and their weight to exactly 0 either way, and the
      // value rows of zero weights add nothing (fmadd(0, v, o) == o), so the numbers are the same.
      bool open = false;
      for (int64_t j = 0; j < S && !open; j++) open = mrow[j] > kMaskedBelow;
      for (int64_t j = 0; j < S; j++) {
        if (open && mrow[j] <= kMaskedBelow) {
          w[j] = -INFINITY;
          continue;
        }
        float sc = dot(kh + j * D, qr, D);
        if (scale != 1.0f) sc = sc * scale;
        sc = sc + mrow[j];
        w[j] = sc;
        mx = sc > mx ? sc : mx;
      }
      float sum = 0.0f;
      for (int64_t j = 0; j < S; j++) {
        w[j] = std::exp(w[j] - mx);
        sum += w[j];
      }
      for (int64_t j = 0; j < S; j++) w[j] = w[j] / sum;
      float *o = out + (head * R + r) * Dv;
      for (int64_t d = 0; d < Dv; d++) o[d] = 0.0f;
      for (int64_t j = 0; j < S; j++) {
        const float wj = w[j];
        if (wj == 0.0f) continue;
        const float *vj = vh + j * Dv;
        for (int64_t d = 0; d < Dv; d++) o[d] = fmadd(wj, vj[d], o[d]);
      }
    }
  });
  return 0;
}

extern "C" int DecodeAttention(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                               void *stream, void *extra) {
  (void)stream, (void)extra, (void)dtypes;
  if (nparam != 7) return 1;
  for (int t = 0; t < 4; t++)
    if (ndims[t] != 4) return 2;
  return decode_attention(shapes, static_cast<const float *>(params[0]), static_cast<const float *>(params[1]),
                          static_cast<const float *>(params[2]), static_cast<const float *>(params[3]),
                          *static_cast<const float *>(params[4]), static_cast<float *>(params[5]),
                          static_cast<float *>(params[6]));
}
// ===================================================================== end of weight-only quantized linear layers ====


// ==== graph-safe elementwise activations (gelu2): C++ shape/type inference, tanh GELU, quick GELU ====================
// `native.py` registers the kernels below with C++ shape and type inference (out_shape=None, out_dtype=None plus a
// registration naming the inputs and outputs): MindSpore then infers them without calling back into Python, so they
// also run in graphs that fall back to dynamic types (a jit function returning a dict / ModelOutput), where a Python
// inference callback fails with "The prim is not a PrimitivePy". Conventions: `NameInferShape(ndims, shapes, extra)`
// returns the output shape, `NameInferType(type_ids, extra)` its dtype (MindSpore's TypeId, opaque here).
#include <vector>

class AotExtra;
enum TypeId : int {};

namespace graph_safe {

static std::vector<int64_t> first_input_shape(const int *ndims, int64_t **shapes) {
  return std::vector<int64_t>(shapes[0], shapes[0] + ndims[0]);
}

}  // namespace graph_safe

// The C++ shape / type inference of a graph-safe kernel whose output has its first input's shape and dtype (AOT looks
// up `<name>InferShape` / `<name>InferType` by the kernel's name)
#define SAME_SHAPE_AS_FIRST_INPUT(name)                                                           \
  extern "C" std::vector<int64_t> name##InferShape(int *ndims, int64_t **shapes, AotExtra *) {   \
    return graph_safe::first_input_shape(ndims, shapes);                                          \
  }                                                                                               \
  extern "C" TypeId name##InferType(std::vector<TypeId> type_ids, AotExtra *) { return type_ids[0]; }

SAME_SHAPE_AS_FIRST_INPUT(GeluErf)
SAME_SHAPE_AS_FIRST_INPUT(GeluErfGrad)

// x * sigmoid(a(x)) activations, float32 in and out, computed in double and rounded once (torch's float kernels are
// ~1 ulp of their float intermediate results off the float64 value; these are within ~1 ulp of it):
//   tanh GELU:  0.5 x (1 + tanh(u)) = x * sigmoid(2u), u = sqrt(2/pi) (x + 0.044715 x^3)   (HF gelu_new / gelu_pytorch_tanh)
//   quick GELU: x * sigmoid(1.702 x)                                                       (HF quick_gelu, CLIP)
// sigmoid(a) from e = exp(-|a|) (never overflows): 1 / (1 + e) for a >= 0, e / (1 + e) below; s (1 - s) = e / (1 + e)^2
// without cancellation, for the gradient dy * (s + x s (1 - s) a'(x)). Blocks and vector width as the exact GELU's.
namespace sigmoid_act {

struct TanhGelu {
  static inline double arg(double x, double *slope) {
    const double c = 0.79788456080286535588;  // sqrt(2 / pi)
    const double x2 = x * x;
    *slope = 2.0 * c * (1.0 + 3.0 * 0.044715 * x2);
    return 2.0 * c * (x + 0.044715 * x2 * x);
  }
};

struct QuickGelu {
  static inline double arg(double x, double *slope) {
    *slope = 1.702;
    return 1.702 * x;
  }
};

template <class Act>
GELU_VECTOR_WIDTH static void forward(const float *x, float *y, int64_t n) {
  double v[gelu_erf::kBlock], out[gelu_erf::kBlock];
  for (int64_t start = 0; start < n; start += gelu_erf::kBlock) {
    const int64_t m = n - start < gelu_erf::kBlock ? n - start : gelu_erf::kBlock;
    for (int64_t i = 0; i < m; i++) v[i] = x[start + i];
#pragma GCC unroll 4
    for (int64_t i = 0; i < gelu_erf::kBlock; i++) {
      double slope;
      const double a = Act::arg(v[i], &slope);
      const double e = gelu_erf::exp_nonpositive(-std::fabs(a));
      const double s = (a >= 0.0 ? 1.0 : e) / (1.0 + e);
      out[i] = v[i] * s;
    }
    for (int64_t i = 0; i < m; i++) y[start + i] = static_cast<float>(out[i]);
  }
}

template <class Act>
GELU_VECTOR_WIDTH static void backward(const float *x, const float *dy, float *dx, int64_t n) {
  double v[gelu_erf::kBlock], d[gelu_erf::kBlock], out[gelu_erf::kBlock];
  for (int64_t start = 0; start < n; start += gelu_erf::kBlock) {
    const int64_t m = n - start < gelu_erf::kBlock ? n - start : gelu_erf::kBlock;
    for (int64_t i = 0; i < m; i++) {
      v[i] = x[start + i];
      d[i] = dy[start + i];
    }
#pragma GCC unroll 4
    for (int64_t i = 0; i < gelu_erf::kBlock; i++) {
      double slope;
      const double a = Act::arg(v[i], &slope);
      const double e = gelu_erf::exp_nonpositive(-std::fabs(a));
      const double inv = 1.0 / (1.0 + e);
      const double s = (a >= 0.0 ? 1.0 : e) * inv;
      out[i] = d[i] * (s + v[i] * slope * e * inv * inv);
    }
    for (int64_t i = 0; i < m; i++) dx[start + i] = static_cast<float>(out[i]);
  }
}

template <class Act>
static int run_forward(int nparam, void **params, int *ndims, int64_t **shapes) {
  if (nparam != 2) return 1;
  const float *x = static_cast<const float *>(params[0]);
  float *y = static_cast<float *>(params[1]);
  parallel_for(num_elements(ndims[0], shapes[0]), kParallelGrain,
               [&](int64_t b, int64_t e) { forward<Act>(x + b, y + b, e - b); });
  return 0;
}

template <class Act>
static int run_backward(int nparam, void **params, int *ndims, int64_t **shapes) {
  if (nparam != 3) return 1;
  const int64_t n = num_elements(ndims[0], shapes[0]);
  if (num_elements(ndims[1], shapes[1]) != n) return 2;
  const float *x = static_cast<const float *>(params[0]);
  const float *dy = static_cast<const float *>(params[1]);
  float *dx = static_cast<float *>(params[2]);
  parallel_for(n, kParallelGrain, [&](int64_t b, int64_t e) { backward<Act>(x + b, dy + b, dx + b, e - b); });
  return 0;
}

}  // namespace sigmoid_act

// Inputs: x (float32, contiguous). Output: the activation of x, same shape.
extern "C" int GeluTanh(int nparam, void **params, int *ndims, int64_t **shapes, const char **, void *, void *) {
  return sigmoid_act::run_forward<sigmoid_act::TanhGelu>(nparam, params, ndims, shapes);
}
extern "C" int QuickGelu(int nparam, void **params, int *ndims, int64_t **shapes, const char **, void *, void *) {
  return sigmoid_act::run_forward<sigmoid_act::QuickGelu>(nparam, params, ndims, shapes);
}
// Inputs: x, dy (float32, contiguous, same size). Output: dx = dy * act'(x).
extern "C" int GeluTanhGrad(int nparam, void **params, int *ndims, int64_t **shapes, const char **, void *, void *) {
  return sigmoid_act::run_backward<sigmoid_act::TanhGelu>(nparam, params, ndims, shapes);
}
extern "C" int QuickGeluGrad(int nparam, void **params, int *ndims, int64_t **shapes, const char **, void *, void *) {
  return sigmoid_act::run_backward<sigmoid_act::QuickGelu>(nparam, params, ndims, shapes);
}

SAME_SHAPE_AS_FIRST_INPUT(GeluTanh)
SAME_SHAPE_AS_FIRST_INPUT(GeluTanhGrad)
SAME_SHAPE_AS_FIRST_INPUT(QuickGelu)
SAME_SHAPE_AS_FIRST_INPUT(QuickGeluGrad)
// ==== end of graph-safe elementwise activations ======================================================================


// ==== layer norm over the last axis (gelu2): LayerNormRows and its gradient LayerNormRowsGrad =========================
// y = (x - mean) / sqrt(var + eps) * w + b per row of K floats (biased variance, as torch), statistics and result in
// double, rounded once. MindSpore's CPU LayerNorm kernel costs ~10x torch's on (8x257, 384) rows (DINOv2-S), one core.
// Graph-safe (C++ inference, see the section above). The gradient kernel has one output so that its shape inference
// stays a single shape: (rows + 2, K) = dx's rows, then dw, then db (the bprop slices them apart).
namespace layer_norm_rows {

// 16 independent partial sums: a strict-FP sum is otherwise one serial chain the compiler may not vectorise
constexpr int kLanes = 16;

// mean and 1 / sqrt(var + eps) of one row, two passes in double (no cancellation in the variance)
GELU_VECTOR_WIDTH static inline void stats(const float *x, int64_t K, double eps, double *mean, double *rstd) {
  double acc[kLanes] = {0.0};
  int64_t k = 0;
  for (; k + kLanes <= K; k += kLanes)
    for (int j = 0; j < kLanes; j++) acc[j] += x[k + j];
  double s = 0.0;
  for (; k < K; k++) s += x[k];
  for (int j = 0; j < kLanes; j++) s += acc[j];
  const double m = s / static_cast<double>(K);
  double vacc[kLanes] = {0.0};
  k = 0;
  for (; k + kLanes <= K; k += kLanes)
    for (int j = 0; j < kLanes; j++) {
      const double d = x[k + j] - m;
      vacc[j] += d * d;
    }
  double v = 0.0;
  for (; k < K; k++) {
    const double d = x[k] - m;
    v += d * d;
  }
  for (int j = 0; j < kLanes; j++) v += vacc[j];
  *mean = m;
  *rstd = 1.0 / std::sqrt(v / static_cast<double>(K) + eps);
}

// rows [r0, r1)
GELU_VECTOR_WIDTH static void forward(const float *x, const float *w, const float *b, float *y, int64_t r0, int64_t r1,
                                     int64_t K, double eps) {
  for (int64_t r = r0; r < r1; r++) {
    const float *xr = x + r * K;
    float *yr = y + r * K;
    double mean, rstd;
    stats(xr, K, eps, &mean, &rstd);
    for (int64_t k = 0; k < K; k++) yr[k] = static_cast<float>((xr[k] - mean) * rstd * w[k] + b[k]);
  }
}

// dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), g = dy * w; dw = sum_rows dy * xhat; db = sum_rows dy.
// Two passes, each split over the native threads: the rows (dx, and each row's mean and rstd), then the columns (dw
// and db, every column summed over the rows in row order, xhat recomputed from the saved statistics): the same sums
// in the same order as one thread.
static void backward(const float *x, const float *w, const float *dy, float *out, int64_t rows, int64_t K,
                     double eps) {
  std::vector<double> means(rows), rstds(rows);
  parallel_for(rows, rows_grain(K), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) {
      const float *xr = x + r * K;
      const float *dyr = dy + r * K;
      double mean, rstd;
      stats(xr, K, eps, &mean, &rstd);
      double sum_g = 0.0, sum_gx = 0.0;
      for (int64_t k = 0; k < K; k++) {
        const double xhat = (xr[k] - mean) * rstd;
        const double g = static_cast<double>(dyr[k]) * w[k];
        sum_g += g;
        sum_gx += g * xhat;
      }
      const double mg = sum_g / static_cast<double>(K), mgx = sum_gx / static_cast<double>(K);
      float *dxr = out + r * K;
      for (int64_t k = 0; k < K; k++)
        dxr[k] = static_cast<float>(rstd * (static_cast<double>(dyr[k]) * w[k] - mg - (xr[k] - mean) * rstd * mgx));
      means[r] = mean;
      rstds[r] = rstd;
    }
  });
  // columns in parts of whole cache lines (16 floats)
  const int64_t col_grain = 16 * ((rows_grain(rows) + 15) / 16);
  parallel_for(K, col_grain, [&](int64_t k0, int64_t k1) {
    std::vector<double> dw(k1 - k0, 0.0), db(k1 - k0, 0.0);
    for (int64_t r = 0; r < rows; r++) {
      const float *xr = x + r * K + k0;
      const float *dyr = dy + r * K + k0;
      const double mean = means[r], rstd = rstds[r];
      for (int64_t k = 0; k < k1 - k0; k++) {
        dw[k] += static_cast<double>(dyr[k]) * ((xr[k] - mean) * rstd);
        db[k] += dyr[k];
      }
    }
    for (int64_t k = 0; k < k1 - k0; k++) {
      out[rows * K + k0 + k] = static_cast<float>(dw[k]);
      out[(rows + 1) * K + k0 + k] = static_cast<float>(db[k]);
    }
  });
}

}  // namespace layer_norm_rows

// Inputs: x (..., K), w (K,), b (K,), eps (1,) float32, contiguous. Output: y, x's shape.
extern "C" int LayerNormRows(int nparam, void **params, int *ndims, int64_t **shapes, const char **, void *, void *) {
  if (nparam != 5) return 1;
  const int64_t K = shapes[0][ndims[0] - 1];
  if (num_elements(ndims[1], shapes[1]) != K || num_elements(ndims[2], shapes[2]) != K) return 2;
  const int64_t rows = K == 0 ? 0 : num_elements(ndims[0], shapes[0]) / K;
  const double eps = static_cast<const float *>(params[3])[0];
  const float *x = static_cast<const float *>(params[0]);
  const float *w = static_cast<const float *>(params[1]);
  const float *b = static_cast<const float *>(params[2]);
  float *y = static_cast<float *>(params[4]);
  parallel_for(rows, rows_grain(K),
               [&](int64_t r0, int64_t r1) { layer_norm_rows::forward(x, w, b, y, r0, r1, K, eps); });
  return 0;
}

// Inputs: x (..., K), w (K,), dy (x's shape), eps (1,) float32, contiguous. Output: (rows + 2, K): dx rows, dw, db.
extern "C" int LayerNormRowsGrad(int nparam, void **params, int *ndims, int64_t **shapes, const char **, void *,
                                 void *) {
  if (nparam != 5) return 1;
  const int64_t K = shapes[0][ndims[0] - 1];
  if (num_elements(ndims[1], shapes[1]) != K) return 2;
  const int64_t n = num_elements(ndims[0], shapes[0]);
  if (num_elements(ndims[2], shapes[2]) != n) return 3;
  const int64_t rows = K == 0 ? 0 : n / K;
  const double eps = static_cast<const float *>(params[3])[0];
  layer_norm_rows::backward(static_cast<const float *>(params[0]), static_cast<const float *>(params[1]),
                            static_cast<const float *>(params[2]), static_cast<float *>(params[4]), rows, K, eps);
  return 0;
}

SAME_SHAPE_AS_FIRST_INPUT(LayerNormRows)
extern "C" std::vector<int64_t> LayerNormRowsGradInferShape(int *ndims, int64_t **shapes, AotExtra *) {
  if (ndims[0] < 1 || shapes[0][0] == -2) return std::vector<int64_t>{-1, -1};  // dynamic rank
  const int64_t K = shapes[0][ndims[0] - 1];
  int64_t rows = 1;
  for (int i = 0; i < ndims[0] - 1; i++) {
    if (shapes[0][i] < 0) return std::vector<int64_t>{-1, K};  // a dynamic axis
    rows *= shapes[0][i];
  }
  return std::vector<int64_t>{rows + 2, K};
}
extern "C" TypeId LayerNormRowsGradInferType(std::vector<TypeId> type_ids, AotExtra *) { return type_ids[0]; }
// ==== end of layer norm over the last axis ===========================================================================


// ==== attention softmax (gelu2): MaskedSoftmax = softmax(scores * scale + mask) over the last axis, and its gradient ==
// scores (B, H, Sq, Sk) float32; mask (Bm, Hm, Qm, Km), each of Bm / Hm / Qm either 1 (broadcast) or B / H / Sq, and
// Km either 1 or Sk; scale (1,). One pass per row in double (scale, mask, max, exp, sum, divide), rounded once: the
// four MindSpore kernels it replaces (Mul, BroadcastTo, Add, Softmax) cost ~8x the work at 512 tokens (SmolLM2
// prefill, one core). A row whose entries are all equal (every key masked with the same value) comes out uniform,
// as eager torch's. Gradient: dx = scale * w * (dy - sum(dy * w)), from the output w. Graph-safe (C++ inference).
namespace masked_softmax {

GELU_VECTOR_WIDTH static void row(const float *x, const float *mask, int64_t mask_stride, double scale, float *y,
                                  int64_t n, std::vector<double> &buf) {
  double *v = buf.data();
  if (mask_stride == 1)
    for (int64_t k = 0; k < n; k++) v[k] = x[k] * scale + static_cast<double>(mask[k]);
  else
    for (int64_t k = 0; k < n; k++) v[k] = x[k] * scale + static_cast<double>(mask[0]);
  double mxs[layer_norm_rows::kLanes];
  for (int j = 0; j < layer_norm_rows::kLanes; j++) mxs[j] = v[0];
  int64_t i = 0;
  for (; i + layer_norm_rows::kLanes <= n; i += layer_norm_rows::kLanes)
    for (int j = 0; j < layer_norm_rows::kLanes; j++) mxs[j] = v[i + j] > mxs[j] ? v[i + j] : mxs[j];
  double mx = v[0];
  for (; i < n; i++) mx = v[i] > mx ? v[i] : mx;
  for (int j = 0; j < layer_norm_rows::kLanes; j++) mx = mxs[j] > mx ? mxs[j] : mx;
  // exp(d) for d < -110 is below float's smallest denormal: exactly 0 here, which also keeps tiny doubles (slow
  // microcode paths when converted to float) out of the output loop (half of a causal mask's entries)
  for (int64_t k = 0; k < n; k++) {
    const double d = v[k] - mx;
    const double e = gelu_erf::exp_nonpositive(d < -110.0 ? -110.0 : d);
    v[k] = d < -110.0 ? 0.0 : e;
  }
  double acc[layer_norm_rows::kLanes] = {0.0};
  int64_t k = 0;
  for (; k + layer_norm_rows::kLanes <= n; k += layer_norm_rows::kLanes)
    for (int j = 0; j < layer_norm_rows::kLanes; j++) acc[j] += v[k + j];
  double s = 0.0;
  for (; k < n; k++) s += v[k];
  for (int j = 0; j < layer_norm_rows::kLanes; j++) s += acc[j];
  const double inv = 1.0 / s;
  for (k = 0; k < n; k++) y[k] = static_cast<float>(v[k] * inv);
}

GELU_VECTOR_WIDTH static void grad_row(const float *w, const float *dy, double scale, float *dx, int64_t n) {
  double acc[layer_norm_rows::kLanes] = {0.0};
  int64_t k = 0;
  for (; k + layer_norm_rows::kLanes <= n; k += layer_norm_rows::kLanes)
    for (int j = 0; j < layer_norm_rows::kLanes; j++)
      acc[j] += static_cast<double>(dy[k + j]) * static_cast<double>(w[k + j]);
  double s = 0.0;
  for (; k < n; k++) s += static_cast<double>(dy[k]) * static_cast<double>(w[k]);
  for (int j = 0; j < layer_norm_rows::kLanes; j++) s += acc[j];
  for (k = 0; k < n; k++) dx[k] = static_cast<float>(scale * static_cast<double>(w[k]) * (dy[k] - s));
}

}  // namespace masked_softmax

// Inputs: scores (B, H, Sq, Sk), mask (Bm, Hm, Qm, Km), scale (1,); float32, contiguous. Output: x's shape.
extern "C" int MaskedSoftmax(int nparam, void **params, int *ndims, int64_t **shapes, const char **, void *, void *) {
  if (nparam != 4 || ndims[0] != 4 || ndims[1] != 4) return 1;
  const int64_t *s = shapes[0], *m = shapes[1];
  const int64_t B = s[0], H = s[1], Sq = s[2], Sk = s[3];
  if ((m[0] != 1 && m[0] != B) || (m[1] != 1 && m[1] != H) || (m[2] != 1 && m[2] != Sq) || (m[3] != 1 && m[3] != Sk))
    return 2;
  if (Sk == 0) return 0;
  const float *x = static_cast<const float *>(params[0]);
  const float *mask = static_cast<const float *>(params[1]);
  const double scale = static_cast<const float *>(params[2])[0];
  float *y = static_cast<float *>(params[3]);
  parallel_for(B * H * Sq, rows_grain(Sk), [&](int64_t r0, int64_t r1) {
    std::vector<double> buf(Sk);
    for (int64_t r = r0; r < r1; r++) {
      const int64_t q = r % Sq, h = (r / Sq) % H, b = r / (Sq * H);
      const int64_t mr = ((m[0] == 1 ? 0 : b) * m[1] + (m[1] == 1 ? 0 : h)) * m[2] + (m[2] == 1 ? 0 : q);
      masked_softmax::row(x + r * Sk, mask + mr * m[3], m[3] == 1 ? 0 : 1, scale, y + r * Sk, Sk, buf);
    }
  });
  return 0;
}

// Inputs: w (the forward's output), dy (same shape), scale (1,); float32, contiguous. Output: d scores, w's shape.
extern "C" int MaskedSoftmaxGrad(int nparam, void **params, int *ndims, int64_t **shapes, const char **, void *,
                                 void *) {
  if (nparam != 4 || ndims[0] < 1) return 1;
  const int64_t n = num_elements(ndims[0], shapes[0]);
  if (num_elements(ndims[1], shapes[1]) != n) return 2;
  const int64_t Sk = shapes[0][ndims[0] - 1];
  if (Sk == 0) return 0;
  const float *w = static_cast<const float *>(params[0]);
  const float *dy = static_cast<const float *>(params[1]);
  const double scale = static_cast<const float *>(params[2])[0];
  float *dx = static_cast<float *>(params[3]);
  parallel_for(n / Sk, rows_grain(Sk), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) masked_softmax::grad_row(w + r * Sk, dy + r * Sk, scale, dx + r * Sk, Sk);
  });
  return 0;
}

SAME_SHAPE_AS_FIRST_INPUT(MaskedSoftmax)
SAME_SHAPE_AS_FIRST_INPUT(MaskedSoftmaxGrad)
// ==== end of attention softmax =======================================================================================


// ==== C++ inference for the RMSNorm kernel (gelu2): `native.rms_norm_graph_op` registers it graph-safe ==============
SAME_SHAPE_AS_FIRST_INPUT(RMSNorm)
// ==== end of C++ inference for the RMSNorm kernel ====================================================================
#include <vector>  // (also included above; repeated so this section stands alone)

// ==== routed SwiGLU experts of a decode step (functional.routed_swiglu_experts; native.py: routed_swiglu_op) =========
// HF 5's stacked expert layout, read in place (the MindSpore route gathers the picked experts' weights into a copy
// at every step, then runs a batched matmul that costs ~10x the work for one row):
//   x (T, H); gate_up (E, 2I, H), gate rows first; down (E, H, I); index (T, k) int64 or int32; weights (T, k)
//   float32. Output (T, H) = sum over j of weights[t, j] * down_e (silu(gate_e x_t) * up_e x_t), e = index[t, j].
// float32, contiguous. Rounded as the MindSpore route: each product by `dot`, silu as g * (1 / (1 + exp(-g))), each
// expert's output times its weight, the k terms added in top-k order. An index outside 0..E-1 is an error (3).
// For few tokens: every token reads its experts' weights once (T * k expert reads in all).
extern "C" int RoutedSwiGLU(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                            void *stream, void *extra) {
  (void)stream, (void)extra;
  if (nparam != 6 || ndims[0] != 2 || ndims[1] != 3 || ndims[2] != 3 || ndims[3] != 2 || ndims[4] != 2) return 1;
  const int64_t T = shapes[0][0], H = shapes[0][1], E = shapes[1][0], I2 = shapes[1][1], I = I2 / 2;
  const int64_t k = shapes[3][1];
  if (shapes[1][2] != H || I2 % 2 || shapes[2][0] != E || shapes[2][1] != H || shapes[2][2] != I) return 2;
  if (shapes[3][0] != T || shapes[4][0] != T || shapes[4][1] != k) return 2;
  const bool index32 = dtypes[3][0] == 'i' && dtypes[3][3] == '3';  // "int32" (else "int64")
  const float *x = static_cast<const float *>(params[0]);
  const float *gate_up = static_cast<const float *>(params[1]);
  const float *down = static_cast<const float *>(params[2]);
  const float *weights = static_cast<const float *>(params[4]);
  float *y = static_cast<float *>(params[5]);
  std::vector<float> act(I), out(H);
  for (int64_t t = 0; t < T; t++) {
    const float *xt = x + t * H;
    float *yt = y + t * H;
    for (int64_t n = 0; n < H; n++) yt[n] = 0.0f;
    for (int64_t j = 0; j < k; j++) {
      const int64_t e = index32 ? static_cast<const int32_t *>(params[3])[t * k + j]
                                : static_cast<const int64_t *>(params[3])[t * k + j];
      if (e < 0 || e >= E) return 3;
      const float *gu = gate_up + e * I2 * H;
      for (int64_t i = 0; i < I; i++) {
        const float g = dot(gu + i * H, xt, H), u = dot(gu + (I + i) * H, xt, H);
        act[i] = g * (1.0f / (1.0f + std::exp(-g))) * u;
      }
      const float *dn = down + e * H * I;
      const float w = weights[t * k + j];
      for (int64_t n = 0; n < H; n++) out[n] = dot(dn + n * I, act.data(), I);
      for (int64_t n = 0; n < H; n++) yt[n] = yt[n] + out[n] * w;
    }
  }
  return 0;
}
// ==== end of routed SwiGLU experts ===================================================================================
// ==== SwapAxes12: (A, B, C, D) -> (A, C, B, D), float32 ============================================================
// A copy of rows of D floats. Its own inverse, so it is also its gradient. Inside a compiled training graph
// MindSpore's Transpose kernel keeps ~2 output-sized buffers until the graph ends (docs/performance.md, "Training
// memory"); this kernel's output is freed after its last use like any other.
extern "C" int SwapAxes12(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
                          void *extra) {
  (void)stream;
  (void)extra;
  (void)dtypes;
  if (nparam != 2 || ndims[0] != 4) return 1;
  const float *x = static_cast<const float *>(params[0]);
  float *y = static_cast<float *>(params[1]);
  const int64_t A = shapes[0][0], B = shapes[0][1], C = shapes[0][2], D = shapes[0][3];
  // one (a, c) pair: B rows of D floats
  parallel_for(A * C, rows_grain(B * D), [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; i++) {
      const int64_t a = i / C, c = i % C;
      float *dst = y + i * B * D;
      const float *src = x + (a * B * C + c) * D;
      for (int64_t b = 0; b < B; b++)
        for (int64_t d = 0; d < D; d++) dst[b * D + d] = src[b * C * D + d];
    }
  });
  return 0;
}

// ==== RMSNormGrad: the gradient of RMSNorm (above) ================================================================
// y = w * x * r with r = (mean(x^2) + eps)^(-1/2) per row, so for g = dy * w:
//   dx = r * g - x * r^3 * mean(g * x),   dw = sum over rows of dy * x * r.
// Inputs: x (..., K), w (K), eps (1), dy (..., K), float32. Outputs: dx (..., K), dw (K). The statistics are
// recomputed from x, so a compiled training step keeps only x for the norm's backward (MindSpore's ops kept ~4
// row-sized tensors per norm). Row sums in float (r as the forward's), dw accumulated over rows in double.
extern "C" int RMSNormGrad(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
                           void *extra) {
  (void)stream, (void)extra, (void)dtypes;
  if (nparam != 6) return 1;
  const int64_t K = shapes[0][ndims[0] - 1], M = num_elements(ndims[0] - 1, shapes[0]);
  if (num_elements(ndims[1], shapes[1]) != K || num_elements(ndims[2], shapes[2]) != 1) return 2;
  const float *x = static_cast<const float *>(params[0]);
  const float *w = static_cast<const float *>(params[1]);
  const float eps = *static_cast<const float *>(params[2]);
  const float *dy = static_cast<const float *>(params[3]);
  float *dx = static_cast<float *>(params[4]);
  float *dw = static_cast<float *>(params[5]);
  // the rows (dx and each row's r), then the columns (dw, each column summed over the rows in row order), both split
  // over the native threads: the same sums in the same order as one thread
  std::vector<float> rs(M);
  parallel_for(M, rows_grain(K), [&](int64_t m0, int64_t m1) {
    for (int64_t m = m0; m < m1; m++) {
      const float *row = x + m * K;
      const float *drow = dy + m * K;
      // 16 partial sums, as rms_norm_rows: the same r as the forward's, and sums the compiler vectorises
      float acc[16] = {0}, gacc[16] = {0};
      int64_t k = 0;
      for (; k + 16 <= K; k += 16)
        for (int j = 0; j < 16; j++) {
          acc[j] += row[k + j] * row[k + j];
          gacc[j] += drow[k + j] * w[k + j] * row[k + j];
        }
      float s = 0.0f, gx = 0.0f;
      for (; k < K; k++) {
        s += row[k] * row[k];
        gx += drow[k] * w[k] * row[k];
      }
      for (int j = 0; j < 16; j++) {
        s += acc[j];
        gx += gacc[j];
      }
      const float r = 1.0f / std::sqrt(s / static_cast<float>(K) + eps);
      const float c = r * r * r * gx / static_cast<float>(K);
      float *out = dx + m * K;
      for (k = 0; k < K; k++) out[k] = r * (drow[k] * w[k]) - row[k] * c;
      rs[m] = r;
    }
  });
  const int64_t col_grain = 16 * ((rows_grain(M) + 15) / 16);  // whole cache lines
  parallel_for(K, col_grain, [&](int64_t k0, int64_t k1) {
    std::vector<double> acc(k1 - k0, 0.0);
    for (int64_t m = 0; m < M; m++) {
      const float *row = x + m * K + k0;
      const float *drow = dy + m * K + k0;
      const float r = rs[m];
      for (int64_t k = 0; k < k1 - k0; k++) acc[k] += static_cast<double>(drow[k]) * static_cast<double>(row[k] * r);
    }
    for (int64_t k = 0; k < k1 - k0; k++) dw[k0 + k] = static_cast<float>(acc[k]);
  });
  return 0;
}

// ==== SumOfSquares: sum(x * x) over a whole float32 tensor (F.sum_of_squares: the global norm of gradient clipping) =
// In double: blocks of kBlock elements, each summed over 16 lanes, then the block sums added in block order; the
// blocks do not depend on the number of threads, so neither does the result. Output: shape (1,), float32, the
// double sum rounded once. MindSpore's reductions cost ~1.5 ns per element (one thread, F.sum_of_squares); this
// pass is bound by reading memory. Graph-safe (C++ inference).
namespace sum_of_squares {

constexpr int64_t kBlock = 1 << 14;

GELU_VECTOR_WIDTH static double block(const float *x, int64_t n) {
  double acc[16] = {0.0};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    for (int j = 0; j < 16; j++) acc[j] += static_cast<double>(x[i + j]) * static_cast<double>(x[i + j]);
  double s = 0.0;
  for (; i < n; i++) s += static_cast<double>(x[i]) * static_cast<double>(x[i]);
  for (int j = 0; j < 16; j++) s += acc[j];
  return s;
}

}  // namespace sum_of_squares

// Inputs: x (float32, contiguous, any shape). Output: sum(x * x), shape (1,).
extern "C" int SumOfSquares(int nparam, void **params, int *ndims, int64_t **shapes, const char **, void *, void *) {
  if (nparam != 2) return 1;
  const int64_t n = num_elements(ndims[0], shapes[0]);
  const float *x = static_cast<const float *>(params[0]);
  const int64_t kBlock = sum_of_squares::kBlock, blocks = (n + kBlock - 1) / kBlock;
  std::vector<double> sums(blocks);
  parallel_for(blocks, kParallelGrain / kBlock, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; b++)
      sums[b] = sum_of_squares::block(x + b * kBlock, n - b * kBlock < kBlock ? n - b * kBlock : kBlock);
  });
  double total = 0.0;
  for (int64_t b = 0; b < blocks; b++) total += sums[b];
  *static_cast<float *>(params[1]) = static_cast<float>(total);
  return 0;
}

// shape (1,): MindSpore takes a shape () output of a custom op for a Python scalar, not a Tensor, inside graphs
extern "C" std::vector<int64_t> SumOfSquaresInferShape(int *, int64_t **, AotExtra *) {
  return std::vector<int64_t>{1};
}
extern "C" TypeId SumOfSquaresInferType(std::vector<TypeId> type_ids, AotExtra *) { return type_ids[0]; }
// ==== end of SumOfSquares ============================================================================================
// =====================================================================================================================
// Quantized products with int8 activations (llama.cpp's method; quantization.py: ACTIVATIONS == "q8")
// =====================================================================================================================
// The exact kernels above multiply float32 x by the packed weights. These quantize each row of x once per call to
// int8 blocks of 32 (llama.cpp's Q8_1 / Q8_0 rule):
//   per block b: d = max|x| / 127, q = rint(x * (1 / d)) (q = 0 when d = 0), s = d * sum(q)
// and then multiply integers:
//   int4: y = sum_b (scale[b] * d[b]) * sum_{j in b} q4_j * q_j + min[b] * s[b]      (scale, min: the block's group)
//   int8: y = sum_b (scale[b] * d[b]) * sum_{j in b} q8_j * q_j
// i.e. x @ dequantize(W)^T with x rounded to 8 bits per block (not the same numbers as the exact kernels). With
// AVX512-VNNI (-march=native on a CPU that has it) the integer dot products are `vpdpbusd` (u8 x s8 -> s32, four
// products per lane): int4 nibbles (0..15) are the unsigned operand; for int8 weights |q| is the unsigned one and
// the weight takes q's sign. Without it: plain loops (same formula, float32 sums in another order).
// Entry points: QLinearInt8Q8 / QLinearInt4Q8, QLinear3Int8Q8 / QLinear3Int4Q8, QSiluGateUpInt8Q8 / Int4Q8, with
// the inputs and outputs of the exact kernels of the same name without "Q8".
namespace q8act {

#if defined(__AVX512VNNI__) && defined(__AVX512BW__) && defined(__AVX512F__)
#define Q8ACT_VNNI 1
#elif defined(__AVX2__) && defined(__FMA__)
#define Q8ACT_AVX2 1
#endif

// x's rows quantized. Layout per row (AVX2 without VNNI, int4): per pair of blocks 64 bytes, the first 32 the low
// halves (elements 0..15) of the 2 blocks, the next 32 their high halves (a 32-byte load of 2 blocks of nibbles);
// dx: per pair 8 floats, block i's d on lanes 4i..4i+3. (AVX2, int8): the portable layout. (VNNI, int4): per quad of 4 blocks 128 bytes, the first 64 the low halves
// (elements 0..15) of the 4 blocks, the next 64 their high halves, to meet a 64-byte load of 4 blocks of nibbles
// (low nibbles: elements 0..15); dx: per quad 16 floats, block i's d on lanes 4i..4i+3.
// (VNNI, int8): per pair of blocks 64 bytes of |q|, a 64-bit mask of q < 0, dx: block i's d on lanes 8i..8i+7.
// (portable): q in element order, dx: d per block. s: d * sum(q) per block (int4). Blocks past the row: zero.
struct Act {
  const int8_t *q;
  const uint64_t *neg;
  const float *dx, *s;
  int64_t row_bytes, row_dx, row_s;  // strides between rows
};

static uint8_t *scratch(size_t n) {
  thread_local std::vector<uint8_t> buffer;
  if (buffer.size() < n + 64) buffer.resize(n + 64);
  const uintptr_t p = reinterpret_cast<uintptr_t>(buffer.data());
  return reinterpret_cast<uint8_t *>((p + 63) & ~static_cast<uintptr_t>(63));
}

// one block of 32 values: q, d, s
static inline void quantize_block(const float *x, int8_t *q, float *d_out, float *s_out) {
  float amax = 0.0f;
  for (int j = 0; j < 32; j++) amax = std::fmax(amax, std::fabs(x[j]));
  const float d = amax / 127.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  int sum = 0;
  for (int j = 0; j < 32; j++) {
    const int v = static_cast<int>(std::nearbyint(x[j] * id));
    q[j] = static_cast<int8_t>(v);
    sum += v;
  }
  *d_out = d;
  *s_out = d * static_cast<float>(sum);
}

static Act quantize_rows(const float *x, int64_t M, int64_t K, int bits) {
  const int64_t nb = K / 32;
#ifdef Q8ACT_VNNI
  const int64_t per = bits == 4 ? 4 : 2, nu = (nb + per - 1) / per;  // units: quads (int4) or pairs (int8)
  const int64_t row_bytes = nu * 64 * (bits == 4 ? 2 : 1), row_dx = nu * 16, row_s = nu * per;
  const int64_t row_neg = bits == 8 ? nu : 0;
#elif defined(Q8ACT_AVX2)
  const int64_t np = (nb + 1) / 2;  // int4: pairs of blocks; int8: the portable layout
  const int64_t row_bytes = bits == 4 ? np * 64 : nb * 32, row_dx = bits == 4 ? np * 8 : nb;
  const int64_t row_s = bits == 4 ? np * 2 : nb, row_neg = 0;
#else
  const int64_t row_bytes = nb * 32, row_dx = nb, row_s = nb, row_neg = 0;
#endif
  const size_t bytes = M * row_bytes, dxb = M * row_dx * 4, sb = M * row_s * 4, nb_ = M * row_neg * 8;
  uint8_t *mem = scratch(bytes + dxb + sb + nb_ + 256);
  int8_t *q = reinterpret_cast<int8_t *>(mem);
  float *dx = reinterpret_cast<float *>(mem + ((bytes + 63) & ~size_t(63)));
  float *s = dx + M * row_dx;
  uint64_t *neg = reinterpret_cast<uint64_t *>(s + M * row_s + 1);
  neg = reinterpret_cast<uint64_t *>((reinterpret_cast<uintptr_t>(neg) + 7) & ~uintptr_t(7));
  for (size_t i = 0; i < bytes; i++) q[i] = 0;
  for (int64_t i = 0; i < M * row_dx; i++) dx[i] = 0.0f;
  for (int64_t i = 0; i < M * row_s; i++) s[i] = 0.0f;
  for (int64_t i = 0; i < M * row_neg; i++) neg[i] = 0;
  for (int64_t m = 0; m < M; m++)
    for (int64_t b = 0; b < nb; b++) {
      int8_t blk[32];
      float d;
      quantize_block(x + m * K + b * 32, blk, &d, s + m * row_s + b);
#ifdef Q8ACT_VNNI
      if (bits == 4) {
        int8_t *quad = q + m * row_bytes + (b / 4) * 128 + (b % 4) * 16;
        for (int t = 0; t < 16; t++) {
          quad[t] = blk[t];
          quad[64 + t] = blk[16 + t];
        }
        for (int l = 0; l < 4; l++) dx[m * row_dx + (b / 4) * 16 + (b % 4) * 4 + l] = d;
      } else {
        int8_t *pair = q + m * row_bytes + (b / 2) * 64 + (b % 2) * 32;
        uint64_t bits_neg = 0;
        for (int t = 0; t < 32; t++) {
          pair[t] = static_cast<int8_t>(blk[t] < 0 ? -blk[t] : blk[t]);
          bits_neg |= static_cast<uint64_t>(blk[t] < 0) << t;
        }
        neg[m * row_neg + b / 2] |= bits_neg << ((b % 2) * 32);
        for (int l = 0; l < 8; l++) dx[m * row_dx + (b / 2) * 16 + (b % 2) * 8 + l] = d;
      }
#elif defined(Q8ACT_AVX2)
      if (bits == 4) {
        int8_t *pair = q + m * row_bytes + (b / 2) * 64 + (b % 2) * 16;
        for (int t = 0; t < 16; t++) {
          pair[t] = blk[t];
          pair[32 + t] = blk[16 + t];
        }
        for (int l = 0; l < 4; l++) dx[m * row_dx + (b / 2) * 8 + (b % 2) * 4 + l] = d;
      } else {
        for (int t = 0; t < 32; t++) q[m * row_bytes + b * 32 + t] = blk[t];
        dx[m * row_dx + b] = d;
      }
#else
      for (int t = 0; t < 32; t++) q[m * row_bytes + b * 32 + t] = blk[t];
      dx[m * row_dx + b] = d;
#endif
    }
  return Act{q, neg, dx, s, row_bytes, row_dx, row_s};
}

// sum_b min[b's group] * s[b]
static inline float min_term(const float *mn, const float *s, int64_t nb, int64_t G) {
  float acc[16] = {0};
  if (G == 32) {
    int64_t b = 0;
    for (; b + 16 <= nb; b += 16)
      for (int j = 0; j < 16; j++) acc[j] = fmadd(mn[b + j], s[b + j], acc[j]);
    for (; b < nb; b++) acc[0] = fmadd(mn[b], s[b], acc[0]);
  } else {
    for (int64_t b = 0; b < nb; b++) acc[b % 16] = fmadd(mn[b * 32 / G], s[b], acc[b % 16]);
  }
  float t = 0.0f;
  for (int j = 0; j < 16; j++) t += acc[j];
  return t;
}

#ifdef Q8ACT_VNNI
// scales of blocks b0 .. b0 + n - 1 (n = 4 or 2; 0 past nb), each repeated over 16 / n lanes (`idx`: the repeat).
// Loaded straight into a register (element stores then a vector load would stall on store forwarding).
static inline __m512 block_scales(const float *scale, int64_t b0, int64_t nb, int64_t G, int n, __m512i idx) {
  __m128 s;
  const int64_t r = nb - b0;
  if (G == 32) {
    s = r >= n ? (n == 4 ? _mm_loadu_ps(scale + b0) : _mm_castpd_ps(_mm_load_sd(reinterpret_cast<const double *>(
                                                          scale + b0))))
               : _mm_maskz_loadu_ps(static_cast<__mmask8>((1u << r) - 1), scale + b0);
  } else {
    s = _mm_setr_ps(scale[b0 * 32 / G], r > 1 ? scale[(b0 + 1) * 32 / G] : 0.0f,
                    n == 4 && r > 2 ? scale[(b0 + 2) * 32 / G] : 0.0f, n == 4 && r > 3 ? scale[(b0 + 3) * 32 / G] : 0.0f);
  }
  return _mm512_permutexvar_ps(idx, _mm512_castps128_ps512(s));
}

// two int4 rows (w0, w1: nb * 16 bytes) with one quantized row of x
static inline void q4_rows2(const uint8_t *w0, const uint8_t *w1, const float *s0, const float *s1, const float *m0,
                            const float *m1, const int8_t *xq, const float *dx, const float *xs, int64_t nb,
                            int64_t G, float *y0, float *y1) {
  const __m512i low = _mm512_set1_epi8(15), zero = _mm512_setzero_si512();
  const __m512i idx = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
  __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
  const int64_t nq = (nb + 3) / 4;
  for (int64_t j = 0; j < nq; j++) {
    __m512i b0, b1;
    if (4 * j + 4 <= nb) {
      b0 = _mm512_loadu_si512(w0 + 64 * j);
      b1 = _mm512_loadu_si512(w1 + 64 * j);
    } else {
      const __mmask64 k = (1ULL << ((nb - 4 * j) * 16)) - 1;
      b0 = _mm512_maskz_loadu_epi8(k, w0 + 64 * j);
      b1 = _mm512_maskz_loadu_epi8(k, w1 + 64 * j);
    }
    const __m512i xl = _mm512_load_si512(xq + 128 * j), xh = _mm512_load_si512(xq + 128 * j + 64);
    const __m512i i0 = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(zero, _mm512_and_si512(b0, low), xl),
                                           _mm512_and_si512(_mm512_srli_epi16(b0, 4), low), xh);
    const __m512i i1 = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(zero, _mm512_and_si512(b1, low), xl),
                                           _mm512_and_si512(_mm512_srli_epi16(b1, 4), low), xh);
    const __m512 d = _mm512_load_ps(dx + 16 * j);
    a0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i0), _mm512_mul_ps(block_scales(s0, 4 * j, nb, G, 4, idx), d), a0);
    a1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i1), _mm512_mul_ps(block_scales(s1, 4 * j, nb, G, 4, idx), d), a1);
  }
  *y0 = _mm512_reduce_add_ps(a0) + min_term(m0, xs, nb, G);
  *y1 = _mm512_reduce_add_ps(a1) + min_term(m1, xs, nb, G);
}

// two int8 rows (w0, w1: nb * 32 bytes) with one quantized row of x (|q| bytes, sign masks)
static inline void q8_rows2(const int8_t *w0, const int8_t *w1, const float *s0, const float *s1, const int8_t *xq,
                            const uint64_t *neg, const float *dx, int64_t nb, int64_t G, float *y0, float *y1) {
  const __m512i zero = _mm512_setzero_si512();
  const __m512i idx = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
  __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
  const int64_t np = (nb + 1) / 2;
  for (int64_t p = 0; p < np; p++) {
    __m512i b0, b1;
    if (2 * p + 2 <= nb) {
      b0 = _mm512_loadu_si512(w0 + 64 * p);
      b1 = _mm512_loadu_si512(w1 + 64 * p);
    } else {
      b0 = _mm512_maskz_loadu_epi8(0xFFFFFFFFULL, w0 + 64 * p);
      b1 = _mm512_maskz_loadu_epi8(0xFFFFFFFFULL, w1 + 64 * p);
    }
    const __mmask64 k = neg[p];
    const __m512i ax = _mm512_load_si512(xq + 64 * p);
    const __m512i i0 = _mm512_dpbusd_epi32(zero, ax, _mm512_mask_sub_epi8(b0, k, zero, b0));
    const __m512i i1 = _mm512_dpbusd_epi32(zero, ax, _mm512_mask_sub_epi8(b1, k, zero, b1));
    const __m512 d = _mm512_load_ps(dx + 16 * p);
    a0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i0), _mm512_mul_ps(block_scales(s0, 2 * p, nb, G, 2, idx), d), a0);
    a1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i1), _mm512_mul_ps(block_scales(s1, 2 * p, nb, G, 2, idx), d), a1);
  }
  *y0 = _mm512_reduce_add_ps(a0);
  *y1 = _mm512_reduce_add_ps(a1);
}
#elif defined(Q8ACT_AVX2)
// AVX2 without VNNI (llama.cpp's route on such CPUs), x in the portable layout: vpmaddubsw multiplies unsigned by
// signed bytes into int16 sums of pairs and vpmaddwd adds those pairs into int32 lanes. int4: the nibbles (0..15)
// are the unsigned operand (a pair's sum is at most 2 * 15 * 127); int8: |w| is the unsigned one and x takes w's
// sign (at most 2 * 128 * 127 < 32767): no int16 saturation.
// The next cache lines of both weight rows, kPrefetchBytes ahead of the loads (int8 rows): with two rows read in
// step the hardware prefetcher alone streamed int8 rows from memory at ~4-6 GB/s on the development machine (Zen 3;
// SmolLM2's 28 MB output layer took 7-8 ms), against ~10 for a plain stream of the same bytes; with this, ~7-10
// (4 ms). int4 rows (kPrefetchBytes4, once per 64 bytes of a row): SmolLM2's 576 x 1536 down projection went from
// ~4 to ~6-7 GB/s from memory (1024 bytes ahead ~6, 2048 ~7, more no better).
constexpr int64_t kPrefetchBytes = 1024;
constexpr int64_t kPrefetchBytes4 = 2048;
template <int64_t Ahead = kPrefetchBytes>
static inline void prefetch_rows(const void *w0, const void *w1) {
  _mm_prefetch(static_cast<const char *>(w0) + Ahead, _MM_HINT_T0);
  _mm_prefetch(static_cast<const char *>(w1) + Ahead, _MM_HINT_T0);
}

// the int32 sums (8 lanes) of 32 products as floats, w unsigned (u8) and x signed
static inline __m256 block_dot(__m256i w_u8, __m256i x_s8) {
  return _mm256_cvtepi32_ps(_mm256_madd_epi16(_mm256_maddubs_epi16(w_u8, x_s8), _mm256_set1_epi16(1)));
}

// the scales of blocks b and b + 1 (0 past nb), each on 4 lanes
static inline __m256 pair_scales(const float *scale, int64_t b, int64_t nb, int64_t G) {
  if (G == 32 && b + 2 <= nb)
    return _mm256_permutevar8x32_ps(_mm256_castps128_ps256(_mm_castpd_ps(_mm_load_sd(
                                        reinterpret_cast<const double *>(scale + b)))),
                                    _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1));
  return _mm256_set_m128(_mm_set1_ps(b + 1 < nb ? scale[(b + 1) * 32 / G] : 0.0f), _mm_set1_ps(scale[b * 32 / G]));
}

// the int32 sums of a pair of int4 blocks (w: their 32 bytes) with x's pair (xl: low halves, xh: high halves),
// block b on lanes 0..3, b + 1 on lanes 4..7 (a pair's int16 sums are at most 4 * 15 * 127)
static inline __m256 q4_pair_dot(__m256i w, __m256i xl, __m256i xh) {
  const __m256i low = _mm256_set1_epi8(15);
  const __m256i p = _mm256_add_epi16(_mm256_maddubs_epi16(_mm256_and_si256(w, low), xl),
                                     _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(w, 4), low), xh));
  return _mm256_cvtepi32_ps(_mm256_madd_epi16(p, _mm256_set1_epi16(1)));
}

// the min terms min[b's group] * s[b] of a row, summed over its blocks on 8 lanes (added to the row's accumulator
// before its one horizontal sum). A scalar sum of 16 partial sums per row (`min_term`) was a serial chain of adds that
// took longer than the products themselves for 576-wide rows.
static inline __m256 min_lanes(const float *mn, const float *s, int64_t nb, int64_t G) {
  __m256 acc = _mm256_setzero_ps();
  if (G == 32) {
    int64_t b = 0;
    for (; b + 8 <= nb; b += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(mn + b), _mm256_loadu_ps(s + b), acc);
    if (b < nb) {  // masked: no read past the row's mins
      const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
      const __m256i keep = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(nb - b)), lane);
      acc = _mm256_fmadd_ps(_mm256_maskload_ps(mn + b, keep), _mm256_maskload_ps(s + b, keep), acc);
    }
    return acc;
  }
  alignas(32) float lanes[8] = {0};
  for (int64_t b = 0; b < nb; b++) lanes[b % 8] = fmadd(mn[b * 32 / G], s[b], lanes[b % 8]);
  return _mm256_load_ps(lanes);
}

// the horizontal sums of a and b
static inline void hsum256_pair(__m256 a, __m256 b, float *ya, float *yb) {
  const __m256 h = _mm256_hadd_ps(a, b);  // a01 a23 b01 b23 | a45 a67 b45 b67
  const __m128 q = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));  // a0145 a2367 b0145 b2367
  const __m128 r = _mm_hadd_ps(q, q);  // a b a b
  *ya = _mm_cvtss_f32(r);
  *yb = _mm_cvtss_f32(_mm_movehdup_ps(r));
}

// two int4 rows (w0, w1: nb * 16 bytes) with one quantized row of x, a pair of blocks per pass
static inline void q4_rows2(const uint8_t *w0, const uint8_t *w1, const float *s0, const float *s1, const float *m0,
                            const float *m1, const int8_t *xq, const float *dx, const float *xs, int64_t nb,
                            int64_t G, float *y0, float *y1) {
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
  for (int64_t b = 0; b < nb; b += 2) {
    if (b % 4 == 0) prefetch_rows<kPrefetchBytes4>(w0 + 16 * b, w1 + 16 * b);
    __m256i v0, v1;
    if (b + 2 <= nb) {
      v0 = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(w0 + 16 * b));
      v1 = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(w1 + 16 * b));
    } else {  // the last block alone: no read past the row
      v0 = _mm256_inserti128_si256(_mm256_setzero_si256(),
                                   _mm_loadu_si128(reinterpret_cast<const __m128i *>(w0 + 16 * b)), 0);
      v1 = _mm256_inserti128_si256(_mm256_setzero_si256(),
                                   _mm_loadu_si128(reinterpret_cast<const __m128i *>(w1 + 16 * b)), 0);
    }
    const __m256i xl = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(xq + 32 * b));
    const __m256i xh = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(xq + 32 * b + 32));
    const __m256 d = _mm256_loadu_ps(dx + 4 * b);
    a0 = _mm256_fmadd_ps(q4_pair_dot(v0, xl, xh), _mm256_mul_ps(pair_scales(s0, b, nb, G), d), a0);
    a1 = _mm256_fmadd_ps(q4_pair_dot(v1, xl, xh), _mm256_mul_ps(pair_scales(s1, b, nb, G), d), a1);
  }
  hsum256_pair(_mm256_add_ps(a0, min_lanes(m0, xs, nb, G)), _mm256_add_ps(a1, min_lanes(m1, xs, nb, G)), y0, y1);
}

static inline __m256i q8_weight(const int8_t *w) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i *>(w));
}

// two int8 rows (w0, w1: nb * 32 bytes) with one quantized row of x
static inline void q8_rows2(const int8_t *w0, const int8_t *w1, const float *s0, const float *s1, const int8_t *xq,
                            const float *dx, int64_t nb, int64_t G, float *y0, float *y1) {
  __m256 a0[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()}, a1[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
  for (int64_t b = 0; b < nb; b++) {
    if (b % 2 == 0) prefetch_rows(w0 + 32 * b, w1 + 32 * b);
    const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(xq + 32 * b));
    const __m256i v0 = q8_weight(w0 + 32 * b), v1 = q8_weight(w1 + 32 * b);
    const int64_t g = b * 32 / G;
    a0[b & 1] = _mm256_fmadd_ps(block_dot(_mm256_sign_epi8(v0, v0), _mm256_sign_epi8(x, v0)),
                                _mm256_set1_ps(s0[g] * dx[b]), a0[b & 1]);
    a1[b & 1] = _mm256_fmadd_ps(block_dot(_mm256_sign_epi8(v1, v1), _mm256_sign_epi8(x, v1)),
                                _mm256_set1_ps(s1[g] * dx[b]), a1[b & 1]);
  }
  *y0 = hsum256(_mm256_add_ps(a0[0], a0[1]));
  *y1 = hsum256(_mm256_add_ps(a1[0], a1[1]));
}
#else
static inline float q4_row(const uint8_t *w, const float *scale, const float *mn, const int8_t *xq, const float *dx,
                           const float *xs, int64_t nb, int64_t G) {
  float acc = 0.0f;
  for (int64_t b = 0; b < nb; b++) {
    int32_t isum = 0;
    for (int t = 0; t < 16; t++)
      isum += static_cast<int32_t>(w[b * 16 + t] & 15) * xq[b * 32 + t] +
              static_cast<int32_t>(w[b * 16 + t] >> 4) * xq[b * 32 + 16 + t];
    acc = fmadd(static_cast<float>(isum), scale[b * 32 / G] * dx[b], acc);
  }
  return acc + min_term(mn, xs, nb, G);
}

static inline float q8_row(const int8_t *w, const float *scale, const int8_t *xq, const float *dx, int64_t nb,
                           int64_t G) {
  float acc = 0.0f;
  for (int64_t b = 0; b < nb; b++) {
    int32_t isum = 0;
    for (int t = 0; t < 32; t++) isum += static_cast<int32_t>(w[b * 32 + t]) * xq[b * 32 + t];
    acc = fmadd(static_cast<float>(isum), scale[b * 32 / G] * dx[b], acc);
  }
  return acc;
}
#endif

// y (M, ldy) columns [n0, n1) of x @ W^T from x's quantized rows
static void product_rows(int bits, const Act &a, const PackedWeight &w, float *y, int64_t M, int64_t K, int64_t ldy,
                         int64_t n0, int64_t n1) {
  const int64_t nb = K / 32, groups = K / w.G, G = w.G;
  for (int64_t m = 0; m < M; m++) {
    const int8_t *xq = a.q + m * a.row_bytes;
    const float *dx = a.dx + m * a.row_dx, *xs = a.s + m * a.row_s;
    float *ym = y + m * ldy;
    if (bits == 4) {
      const uint8_t *q = static_cast<const uint8_t *>(w.q);
#if defined(Q8ACT_VNNI) || defined(Q8ACT_AVX2)
      int64_t n = n0;
      for (; n + 2 <= n1; n += 2)
        q4_rows2(q + n * K / 2, q + (n + 1) * K / 2, w.scale + n * groups, w.scale + (n + 1) * groups,
                 w.mn + n * groups, w.mn + (n + 1) * groups, xq, dx, xs, nb, G, ym + n, ym + n + 1);
      if (n < n1) {
        float dummy;
        q4_rows2(q + n * K / 2, q + n * K / 2, w.scale + n * groups, w.scale + n * groups, w.mn + n * groups,
                 w.mn + n * groups, xq, dx, xs, nb, G, ym + n, &dummy);
      }
#else
      for (int64_t n = n0; n < n1; n++)
        ym[n] = q4_row(q + n * K / 2, w.scale + n * groups, w.mn + n * groups, xq, dx, xs, nb, G);
#endif
    } else {
      const int8_t *q = static_cast<const int8_t *>(w.q);
#ifdef Q8ACT_VNNI
      const uint64_t *neg = a.neg + m * (a.row_dx / 16);
      int64_t n = n0;
      for (; n + 2 <= n1; n += 2)
        q8_rows2(q + n * K, q + (n + 1) * K, w.scale + n * groups, w.scale + (n + 1) * groups, xq, neg, dx, nb, G,
                 ym + n, ym + n + 1);
      if (n < n1) {
        float dummy;
        q8_rows2(q + n * K, q + n * K, w.scale + n * groups, w.scale + n * groups, xq, neg, dx, nb, G, ym + n,
                 &dummy);
      }
#elif defined(Q8ACT_AVX2)
      int64_t n = n0;
      for (; n + 2 <= n1; n += 2)
        q8_rows2(q + n * K, q + (n + 1) * K, w.scale + n * groups, w.scale + (n + 1) * groups, xq, dx, nb, G, ym + n,
                 ym + n + 1);
      if (n < n1) {
        float dummy;
        q8_rows2(q + n * K, q + n * K, w.scale + n * groups, w.scale + n * groups, xq, dx, nb, G, ym + n, &dummy);
      }
#else
      for (int64_t n = n0; n < n1; n++) ym[n] = q8_row(q + n * K, w.scale + n * groups, xq, dx, nb, G);
#endif
    }
  }
}

// over the native threads, each taking whole pairs of rows (the same pairs as one thread: the same numbers)
static void product(int bits, const Act &a, const PackedWeight &w, float *y, int64_t M, int64_t K, int64_t ldy) {
  parallel_for(w.N, 16, [&](int64_t n0, int64_t n1) {
    with_float32_scales(w, bits, K, n0, n1, [&](const PackedWeight &rows, int64_t r0, int64_t r1) {
      product_rows(bits, a, rows, y + r0, M, K, ldy, 0, r1 - r0);
    });
  });
}

static int linear(int bits, int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes) {
  if (nparam != (bits == 8 ? 4 : 5)) return 1;
  const int64_t K = shapes[0][ndims[0] - 1], M = num_elements(ndims[0] - 1, shapes[0]);
  PackedWeight w;
  if (int err = packed_weight(params, ndims, shapes, dtypes, 1, bits, K, &w)) return err;
  const Act a = quantize_rows(static_cast<const float *>(params[0]), M, K, bits);
  product(bits, a, w, static_cast<float *>(params[nparam - 1]), M, K, w.N);
  return 0;
}

static int linear3(int bits, int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes) {
  const int per = bits == 8 ? 2 : 3;
  if (nparam != 1 + 3 * per + 3) return 1;
  const int64_t K = shapes[0][ndims[0] - 1], M = num_elements(ndims[0] - 1, shapes[0]);
  PackedWeight w[3];
  for (int i = 0; i < 3; i++)
    if (int err = packed_weight(params, ndims, shapes, dtypes, 1 + i * per, bits, K, &w[i])) return err;
  const Act a = quantize_rows(static_cast<const float *>(params[0]), M, K, bits);
  for (int i = 0; i < 3; i++) product(bits, a, w[i], static_cast<float *>(params[1 + 3 * per + i]), M, K, w[i].N);
  return 0;
}

static int silu_gate_up(int bits, int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes) {
  const int per = bits == 8 ? 2 : 3;
  if (nparam != 1 + 2 * per + 1) return 1;
  const int64_t K = shapes[0][ndims[0] - 1], M = num_elements(ndims[0] - 1, shapes[0]);
  PackedWeight gate, up;
  if (int err = packed_weight(params, ndims, shapes, dtypes, 1, bits, K, &gate)) return err;
  if (int err = packed_weight(params, ndims, shapes, dtypes, 1 + per, bits, K, &up)) return err;
  if (gate.N != up.N) return 6;
  const int64_t N = gate.N;
  const Act a = quantize_rows(static_cast<const float *>(params[0]), M, K, bits);
  float *y = static_cast<float *>(params[nparam - 1]);
  float *g = gate_buffer(M * N);
  product(bits, a, gate, g, M, K, N);
  product(bits, a, up, y, M, K, N);
  for (int64_t i = 0; i < M * N; i++) {
    const float sigmoid = 1.0f / (1.0f + std::exp(-g[i]));
    y[i] = (g[i] * sigmoid) * y[i];
  }
  return 0;
}

}  // namespace q8act

// the AOT entry point NAME calling q8act::FN(<the extra arguments>, nparam, params, ndims, shapes); also used by the
// fused kernels' entry points below
#define Q8ACT_ENTRY(NAME, FN, ...)                                                                                  \
  extern "C" int NAME(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,  \
                      void *extra) {                                                                                \
    (void)stream, (void)extra;                                                                                      \
    return q8act::FN(__VA_ARGS__, nparam, params, ndims, shapes, dtypes);                                           \
  }
Q8ACT_ENTRY(QLinearInt8Q8, linear, 8)
Q8ACT_ENTRY(QLinearInt4Q8, linear, 4)
Q8ACT_ENTRY(QLinear3Int8Q8, linear3, 8)
Q8ACT_ENTRY(QLinear3Int4Q8, linear3, 4)
Q8ACT_ENTRY(QSiluGateUpInt8Q8, silu_gate_up, 8)
Q8ACT_ENTRY(QSiluGateUpInt4Q8, silu_gate_up, 4)

// A SwiGLU MLP and the residual add after it in one launch (quantization.py: fused_mlp_residual):
//   out = residual + down(silu(x @ Wg^T) * (x @ Wu^T))
// with x rounded to int8 blocks for gate / up, and the activation silu(g) * u rounded the same way for down (as the
// separate q8 kernels compute it: QSiluGateUp*Q8, then QLinear*Q8, then the add). Inputs: x (..., K), q, scale[, min]
// of the gate, up (N, K) and down (K, N) weights (one bits, group sizes dividing K / N), residual (..., K).
// Output: (..., K). One kernel launch of a decode step's layer instead of three.
namespace q8act {

static float *mlp_buffer(int64_t n) {
  thread_local std::vector<float> buffer;
  if (static_cast<int64_t>(buffer.size()) < n) buffer.resize(n);
  return buffer.data();
}

static void mlp_residual_rows(int bits, const float *x, const PackedWeight &gate, const PackedWeight &up,
                              const PackedWeight &down, const float *residual, float *out, int64_t M, int64_t K);

static int mlp_residual(int bits, int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes) {
  const int per = bits == 8 ? 2 : 3;
  if (nparam != 1 + 3 * per + 2) return 1;
  const int64_t K = shapes[0][ndims[0] - 1], M = num_elements(ndims[0] - 1, shapes[0]);
  PackedWeight gate, up, down;
  if (int err = packed_weight(params, ndims, shapes, dtypes, 1, bits, K, &gate)) return err;
  if (int err = packed_weight(params, ndims, shapes, dtypes, 1 + per, bits, K, &up)) return err;
  if (gate.N != up.N) return 6;
  const int64_t N = gate.N;
  if (int err = packed_weight(params, ndims, shapes, dtypes, 1 + 2 * per, bits, N, &down)) return err;
  if (down.N != K || num_elements(ndims[1 + 3 * per], shapes[1 + 3 * per]) != M * K) return 7;
  mlp_residual_rows(bits, static_cast<const float *>(params[0]), gate, up, down,
                    static_cast<const float *>(params[1 + 3 * per]), static_cast<float *>(params[nparam - 1]), M, K);
  return 0;
}

// out (M, K) = residual + down(silu(x Wg^T) * (x Wu^T)), x (M, K); gate / up (N, K), down (K, N) checked by the caller
static void mlp_residual_rows(int bits, const float *x, const PackedWeight &gate, const PackedWeight &up,
                              const PackedWeight &down, const float *residual, float *out, int64_t M, int64_t K) {
  const int64_t N = gate.N;
  float *g = mlp_buffer(2 * M * N), *u = g + M * N;
  const Act a = quantize_rows(x, M, K, bits);
  product(bits, a, gate, g, M, K, N);
  product(bits, a, up, u, M, K, N);
  for (int64_t i = 0; i < M * N; i++) {
    const float sigmoid = 1.0f / (1.0f + std::exp(-g[i]));
    u[i] = (g[i] * sigmoid) * u[i];
  }
  const Act h = quantize_rows(u, M, N, bits);  // the scratch of `a` is reused: a is no longer read
  product(bits, h, down, out, M, N, K);
  for (int64_t i = 0; i < M * K; i++) out[i] = residual[i] + out[i];
}

// ---- a Llama decoder layer's decode step in two launches (quantization.py: fused_attention_input[_to_cache],
// fused_attention_output_mlp; with a static cache the first also writes the KV cache, else a MindSpore update runs
// between them) ----------------------------------------------------------------------------------------------------
// Each computes what the separate kernels of the q8 route compute, in the same order with the same loops (RMSNorm,
// the q8 products, BatchMatMulNN's RoPE product, DecodeAttention, the adds), so the outputs are those of the separate
// route (bit for bit where the loops are the same code). ~11 launches of a SmolLM2 layer -> 2.

static float *layer_buffer(int64_t n) {
  thread_local std::vector<float> buffer;
  if (static_cast<int64_t>(buffer.size()) < n) buffer.resize(n);
  return buffer.data();
}

// RoPE of rows y (B, S, heads * D) with per-position (D, D) matrices rot (Br, S, D, D), Br 1 or B, written heads
// first: out (B, heads, S, D)[b, h, s] = y[b, s, h] @ rot[b, s], summed as BatchMatMulNN
static void rotate_heads(const float *y, const float *rot, int64_t Br, float *out, int64_t B, int64_t S,
                         int64_t heads, int64_t D) {
  for (int64_t b = 0; b < B; b++)
    for (int64_t s = 0; s < S; s++) {
      const float *r = rot + ((Br == 1 ? 0 : b) * S + s) * D * D;
      for (int64_t h = 0; h < heads; h++) {
        const float *x = y + (b * S + s) * heads * D + h * D;
        float *row = out + ((b * heads + h) * S + s) * D;
        for (int64_t d = 0; d < D; d++) row[d] = 0.0f;
        for (int64_t n = 0; n < D; n++) {
          const float w = x[n];
          const float *v = r + n * D;
          for (int64_t d = 0; d < D; d++) row[d] = fmadd(w, v[d], row[d]);
        }
      }
    }
}

// Input norm, q / k / v products and RoPE:
//   h = RMSNorm(x; norm_w, eps); q = rope(h Wq^T; qrot); k = rope(h Wk^T; krot); v = h Wv^T
// Inputs: x (B, S, K), norm_w (K), eps (1), q, scale[, min] of Wq (H * D, K), of Wk (Hk * D, K), of Wv (Hk * D, K),
// qrot, krot (Br, S, D, D) with Br 1 or B (the query rotation carries the attention scale).
// QAttentionInput*Q8: outputs, heads first, q (B, H, S, D), k (B, Hk, S, D), v (B, Hk, S, D).
// QAttentionInputCache*Q8: three more inputs, the KV cache's key and value storage (B, Hk, T, D) float32 and the
// slots cache_position (S) int64; k and v are written into slots cache_position[s] of the storage IN PLACE (as the
// cache's ScatterNdUpdate would), and the output is q only. The write through input pointers is declared to
// MindSpore (native.attention_input_cache_q8_op: the storage inputs are RW_WRITE refs of a side-effecting
// primitive, as ScatterNdUpdate's), so reads of the storage are ordered after it.
static int attention_input(int bits, bool cache, int nparam, void **params, int *ndims, int64_t **shapes,
                           const char **dtypes) {
  const int per = bits == 8 ? 2 : 3;
  if (nparam != 3 + 3 * per + 2 + (cache ? 3 + 1 : 3)) return 1;
  if (ndims[0] != 3) return 2;
  const int64_t B = shapes[0][0], S = shapes[0][1], K = shapes[0][2], M = B * S;
  if (num_elements(ndims[1], shapes[1]) != K || num_elements(ndims[2], shapes[2]) != 1) return 2;
  PackedWeight w[3];
  for (int i = 0; i < 3; i++)
    if (int err = packed_weight(params, ndims, shapes, dtypes, 3 + i * per, bits, K, &w[i])) return err;
  const int qr = 3 + 3 * per, kr = qr + 1;
  for (int t : {qr, kr})
    if (ndims[t] != 4 || (shapes[t][0] != 1 && shapes[t][0] != B) || shapes[t][1] != S ||
        shapes[t][2] != shapes[t][3] || shapes[qr][3] != shapes[t][3])
      return 8;
  const int64_t D = shapes[qr][3];
  if (D <= 0 || w[0].N % D || w[1].N % D || w[2].N != w[1].N) return 9;
  const int64_t H = w[0].N / D, Hk = w[1].N / D;
  int64_t T = 0;
  const int64_t *slots = nullptr;
  if (cache) {
    const int kc = kr + 1;
    for (int t : {kc, kc + 1})
      if (ndims[t] != 4 || shapes[t][0] != B || shapes[t][1] != Hk || shapes[t][3] != D ||
          shapes[t][2] != shapes[kc][2])
        return 11;
    T = shapes[kc][2];
    if (num_elements(ndims[kc + 2], shapes[kc + 2]) != S) return 12;
    slots = static_cast<const int64_t *>(params[kc + 2]);
    for (int64_t s = 0; s < S; s++)
      if (slots[s] < 0 || slots[s] >= T) return 13;
  }
  float *h = layer_buffer(M * (K + w[0].N + 4 * w[1].N));
  float *yq = h + M * K, *yk = yq + M * w[0].N, *yv = yk + M * w[1].N, *rk = yv + M * w[1].N;
  rms_norm_rows(static_cast<const float *>(params[0]), static_cast<const float *>(params[1]),
                *static_cast<const float *>(params[2]), h, M, K);
  const Act a = quantize_rows(h, M, K, bits);
  product(bits, a, w[0], yq, M, K, w[0].N);
  product(bits, a, w[1], yk, M, K, w[1].N);
  product(bits, a, w[2], yv, M, K, w[2].N);
  const int out = cache ? kr + 4 : kr + 1;
  rotate_heads(yq, static_cast<const float *>(params[qr]), shapes[qr][0], static_cast<float *>(params[out]), B, S, H,
               D);
  // k and v heads first: into the outputs (B, Hk, S, D), or into the storage's slots (B, Hk, T, D)
  float *out_k = cache ? static_cast<float *>(params[kr + 1]) : static_cast<float *>(params[out + 1]);
  float *out_v = cache ? static_cast<float *>(params[kr + 2]) : static_cast<float *>(params[out + 2]);
  rotate_heads(yk, static_cast<const float *>(params[kr]), shapes[kr][0], rk, B, S, Hk, D);
  for (int64_t b = 0; b < B; b++)
    for (int64_t hk = 0; hk < Hk; hk++)
      for (int64_t s = 0; s < S; s++) {
        const int64_t dst = cache ? ((b * Hk + hk) * T + slots[s]) * D : ((b * Hk + hk) * S + s) * D;
        const float *kr_row = rk + ((b * Hk + hk) * S + s) * D, *v_row = yv + (b * S + s) * Hk * D + hk * D;
        for (int64_t d = 0; d < D; d++) {
          out_k[dst + d] = kr_row[d];
          out_v[dst + d] = v_row[d];
        }
      }
  return 0;
}

// Attention over the cache, head merge, output projection, residual add, post-attention norm, MLP and its residual:
//   a = attention(q, k, v, mask) (scale 1: folded into q);  r = residual + merge(a) Wo^T
//   out = r + down(silu(n Wg^T) * (n Wu^T)),  n = RMSNorm(r; norm_w, eps)
// Inputs: q (B, H, S, D), k (B, Hk, T, D), v (B, Hk, T, Dv) (the cache after this step's write), mask (Bm, Hm, Qm,
// T) additive as DecodeAttention's, q, scale[, min] of Wo (K, H * Dv), residual (B, S, K), norm_w (K), eps (1), then
// the gate, up (N, K) and down (K, N) weights. Output: out (B, S, K).
static int attention_output_mlp(int bits, int nparam, void **params, int *ndims, int64_t **shapes,
                                const char **dtypes) {
  const int per = bits == 8 ? 2 : 3;
  if (nparam != 4 + per + 3 + 3 * per + 1) return 1;
  for (int t = 0; t < 4; t++)
    if (ndims[t] != 4) return 2;
  const int64_t B = shapes[0][0], H = shapes[0][1], S = shapes[0][2], D = shapes[0][3];
  const int64_t Hk = shapes[1][1], Dv = shapes[2][3], T = shapes[1][2];
  if (Hk <= 0 || H % Hk) return 2;
  const int ri = 4 + per, gi = ri + 3;
  if (ndims[ri] != 3 || shapes[ri][0] != B || shapes[ri][1] != S) return 2;
  const int64_t K = shapes[ri][2], M = B * S, HD = H * Dv;
  if (num_elements(ndims[ri + 1], shapes[ri + 1]) != K || num_elements(ndims[ri + 2], shapes[ri + 2]) != 1) return 2;
  PackedWeight wo, gate, up, down;
  if (int err = packed_weight(params, ndims, shapes, dtypes, 4, bits, HD, &wo)) return err;
  if (wo.N != K) return 7;
  if (int err = packed_weight(params, ndims, shapes, dtypes, gi, bits, K, &gate)) return err;
  if (int err = packed_weight(params, ndims, shapes, dtypes, gi + per, bits, K, &up)) return err;
  if (gate.N != up.N) return 6;
  if (int err = packed_weight(params, ndims, shapes, dtypes, gi + 2 * per, bits, gate.N, &down)) return err;
  if (down.N != K) return 7;
  // DecodeAttention's view of q: the R = (H / Hk) * S query rows of each kv head
  int64_t q_shape[4] = {B, Hk, (H / Hk) * S, D};
  int64_t *att_shapes[4] = {q_shape, shapes[1], shapes[2], shapes[3]};
  float *att = layer_buffer(M * HD + M * HD + 2 * M * K + B * H * S * T);
  float *merged = att + M * HD, *r = merged + M * HD, *n = r + M * K, *weights = n + M * K;
  if (int err = decode_attention(att_shapes, static_cast<const float *>(params[0]),
                                 static_cast<const float *>(params[1]), static_cast<const float *>(params[2]),
                                 static_cast<const float *>(params[3]), 1.0f, att, weights))
    return 10 + err;
  for (int64_t b = 0; b < B; b++)
    for (int64_t h = 0; h < H; h++)
      for (int64_t s = 0; s < S; s++)
        for (int64_t d = 0; d < Dv; d++)
          merged[(b * S + s) * HD + h * Dv + d] = att[((b * H + h) * S + s) * Dv + d];
  const Act a = quantize_rows(merged, M, HD, bits);
  product(bits, a, wo, r, M, HD, K);
  const float *residual = static_cast<const float *>(params[ri]);
  for (int64_t i = 0; i < M * K; i++) r[i] = residual[i] + r[i];
  rms_norm_rows(r, static_cast<const float *>(params[ri + 1]), *static_cast<const float *>(params[ri + 2]), n, M, K);
  mlp_residual_rows(bits, n, gate, up, down, r, static_cast<float *>(params[nparam - 1]), M, K);
  return 0;
}

}  // namespace q8act

Q8ACT_ENTRY(QAttentionInputInt8Q8, attention_input, 8, false)
Q8ACT_ENTRY(QAttentionInputInt4Q8, attention_input, 4, false)
Q8ACT_ENTRY(QAttentionInputCacheInt8Q8, attention_input, 8, true)
Q8ACT_ENTRY(QAttentionInputCacheInt4Q8, attention_input, 4, true)
Q8ACT_ENTRY(QAttentionOutputMlpInt8Q8, attention_output_mlp, 8)
Q8ACT_ENTRY(QAttentionOutputMlpInt4Q8, attention_output_mlp, 4)
Q8ACT_ENTRY(QMlpResidualInt8Q8, mlp_residual, 8)
Q8ACT_ENTRY(QMlpResidualInt4Q8, mlp_residual, 4)
#undef Q8ACT_ENTRY
// ============================================================ end of quantized products with int8 activations ====
