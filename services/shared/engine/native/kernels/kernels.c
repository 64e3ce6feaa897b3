/*
 * bertforge native engine: the elementwise and reduction kernels (everything that is not a GEMM).
 * Loaded through Deno FFI by ../kernels.ts; kernels.ts also holds a TypeScript twin of every function here,
 * used when this library is absent. Keep the two in step: kernels_test.ts compares them.
 *
 * Letters: B batch, T sequence length, C channels, NH heads, N rows (usually B*T), D row width, V vocab.
 * Conventions, after karpathy/llm.c train_gpt2.c: forward functions write their outputs; backward functions
 * write the gradient of their input (din) and ADD into parameter gradients (dw, db).
 *
 * Determinism: every reduction is split by a fixed rule that does not depend on the thread count (rows for
 * per-row work, columns for sums over rows, fixed chunks for the global norm), so results are bit-identical
 * for any OMP_NUM_THREADS. Dropout uses a counter-based hash, so its mask depends only on (seed, offset + i).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <omp.h>

#define SQRT_2_OVER_PI_INV 0.7071067811865476f /* 1/sqrt(2) */
#define INV_SQRT_2PI 0.3989422804014327f

/* exp(x) from Cephes' expf polynomial (about 2 ulp), written with plain float and integer operations so loops
 * that call it vectorize (glibc's vector expf is not always picked up); exact 0 below the float range, so masked
 * attention entries get exactly zero probability. */
static inline float fast_expf(float x) {
  /* ternaries, not fminf/fmaxf: those keep GCC from vectorizing the caller's loop */
  const float xc = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
  const float n = floorf(xc * 1.44269504088896341f + 0.5f);
  float r = xc - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = ((int32_t)n + 127) << 23;
  float scale;
  memcpy(&scale, &bits, sizeof scale); /* 2^n */
  return x < -87.0f ? 0.0f : p * scale;
}

/* Below this many elements a kernel runs on the calling thread: waking the OpenMP team costs more than the work
 * (small inference batches, pooler and classifier rows). Results do not depend on it. */
#define PARALLEL_MIN 16384

void bf_set_threads(int n) { omp_set_num_threads(n > 0 ? n : 1); }
/* Bumped whenever a signature changes: kernels.ts refuses a stale build instead of calling it with wrong arguments. */
int bf_version(void) { return 3; }

/* ---------------------------------------------------------------- dropout RNG */

static inline uint32_t mix32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7feb352dU;
  x ^= x >> 15;
  x *= 0x846ca68bU;
  x ^= x >> 16;
  return x;
}

/* One uniform 32-bit draw for element counter c of stream `seed`: a pure function, so any thread can make it. */
static inline uint32_t draw32(uint32_t seed, uint64_t c) {
  uint32_t key = mix32(seed ^ mix32((uint32_t)(c >> 32) + 0x9e3779b9U));
  return mix32(mix32((uint32_t)c ^ key) + key);
}

static inline uint32_t keep_threshold(float p) { return (uint32_t)((double)p * 4294967296.0); }

/* Applies dropout to n values of `inp` whose counters start at c0, writing residual + kept * scale (or kept * scale
 * when residual is NULL). Where the high 32 bits of the counter are constant over the block (all but one block in
 * 2^32 counters) the key is hoisted and the loop is plain 32-bit integer math that the compiler vectorizes. */
static inline void dropout_block(float* out, const float* inp, const float* bias, const float* residual, int n,
                                 uint32_t seed, uint64_t c0, uint32_t thresh, float scale) {
  if ((uint64_t)(uint32_t)c0 + (uint64_t)n <= 0x100000000ULL) {
    const uint32_t key = mix32(seed ^ mix32((uint32_t)(c0 >> 32) + 0x9e3779b9U));
    const uint32_t lo0 = (uint32_t)c0;
    if (residual) {
      for (int j = 0; j < n; j++) {
        const uint32_t r = mix32(mix32((lo0 + (uint32_t)j) ^ key) + key);
        const float v = inp[j] + bias[j];
        out[j] = residual[j] + (r >= thresh ? v * scale : 0.0f);
      }
    } else {
      for (int j = 0; j < n; j++) {
        const uint32_t r = mix32(mix32((lo0 + (uint32_t)j) ^ key) + key);
        out[j] = r >= thresh ? inp[j] * scale : 0.0f;
      }
    }
    return;
  }
  for (int j = 0; j < n; j++) {
    const int keep = draw32(seed, c0 + (uint64_t)j) >= thresh;
    if (residual) out[j] = residual[j] + (keep ? (inp[j] + bias[j]) * scale : 0.0f);
    else out[j] = keep ? inp[j] * scale : 0.0f;
  }
}

#define DROPOUT_BLOCK 4096

/* out[i] = keep(i) ? in[i] / (1 - p) : 0, keep(i) = draw(offset + i) >= p * 2^32. Backward is the same call on
 * the upstream gradient with the same (seed, offset). In place is fine. */
void bf_dropout(float* out, const float* inp, int n, float p, uint32_t seed, double offset) {
  if (p <= 0.0f) {
    if (out != inp) memcpy(out, inp, sizeof(float) * (size_t)n);
    return;
  }
  const uint64_t base = (uint64_t)offset;
  const uint32_t thresh = keep_threshold(p);
  const float scale = 1.0f / (1.0f - p);
  const int blocks = (n + DROPOUT_BLOCK - 1) / DROPOUT_BLOCK;
#pragma omp parallel for schedule(static) if ((long)n >= PARALLEL_MIN)
  for (int k = 0; k < blocks; k++) {
    const int i0 = k * DROPOUT_BLOCK, len = n - i0 < DROPOUT_BLOCK ? n - i0 : DROPOUT_BLOCK;
    dropout_block(out + i0, inp + i0, NULL, NULL, len, seed, base + (uint64_t)i0, thresh, scale);
  }
}

/* out (N,D) = residual + dropout(inp + bias): the tail of an attention-output or FFN-output block, before LayerNorm. */
void bf_residual_dropout(float* out, const float* inp, const float* bias, const float* residual, int N, int D,
                         float p, uint32_t seed, double offset) {
  const uint64_t base = (uint64_t)offset;
  const uint32_t thresh = keep_threshold(p);
  const float scale = p > 0.0f ? 1.0f / (1.0f - p) : 1.0f;
#pragma omp parallel for schedule(static) if ((long)N * D >= PARALLEL_MIN)
  for (int r = 0; r < N; r++) {
    const size_t o = (size_t)r * D;
    if (p > 0.0f) {
      dropout_block(out + o, inp + o, bias, residual + o, D, seed, base + o, thresh, scale);
    } else {
      for (int j = 0; j < D; j++) out[o + j] = residual[o + j] + (inp[o + j] + bias[j]);
    }
  }
}

/* ---------------------------------------------------------------- embeddings */

/* out (B,T,C) = wte[ids] + wpe[t] + wtt[types] */
void bf_embed_fwd(float* out, const int32_t* ids, const int32_t* types, const float* wte, const float* wpe,
                  const float* wtt, int B, int T, int C) {
#pragma omp parallel for schedule(static) if ((long)B * T * C >= PARALLEL_MIN)
  for (int bt = 0; bt < B * T; bt++) {
    const int t = bt % T;
    const float* we = wte + (size_t)ids[bt] * C;
    const float* pe = wpe + (size_t)t * C;
    const float* te = wtt + (size_t)types[bt] * C;
    float* o = out + (size_t)bt * C;
    for (int c = 0; c < C; c++) o[c] = we[c] + pe[c] + te[c];
  }
}

/* Scatter-add of dout (B,T,C) into the three tables. Split by columns so repeated ids never race and the sum
 * order (row order) is fixed. Rows whose id is pad_id get no gradient, as torch.nn.Embedding(padding_idx). */
void bf_embed_bwd(float* dwte, float* dwpe, float* dwtt, const float* dout, const int32_t* ids,
                  const int32_t* types, int B, int T, int C, int pad_id) {
#pragma omp parallel if ((long)B * T * C >= PARALLEL_MIN)
  {
    const int nt = omp_get_num_threads(), tid = omp_get_thread_num();
    const int c0 = (int)((long)C * tid / nt), c1 = (int)((long)C * (tid + 1) / nt);
    for (int bt = 0; bt < B * T; bt++) {
      const float* g = dout + (size_t)bt * C;
      const int t = bt % T;
      float* pe = dwpe + (size_t)t * C;
      float* te = dwtt + (size_t)types[bt] * C;
      for (int c = c0; c < c1; c++) {
        pe[c] += g[c];
        te[c] += g[c];
      }
      if (ids[bt] != pad_id) {
        float* we = dwte + (size_t)ids[bt] * C;
        for (int c = c0; c < c1; c++) we[c] += g[c];
      }
    }
  }
}

/* out (M,C) = inp[idx[m]] ; the rows of the MLM head. */
void bf_gather_rows(float* out, const float* inp, const int32_t* idx, int M, int C) {
#pragma omp parallel for schedule(static) if ((long)M * C >= PARALLEL_MIN)
  for (int m = 0; m < M; m++) memcpy(out + (size_t)m * C, inp + (size_t)idx[m] * C, sizeof(float) * C);
}

/* dinp[idx[m]] += dout[m]; idx holds distinct rows. */
void bf_scatter_add_rows(float* dinp, const float* dout, const int32_t* idx, int M, int C) {
#pragma omp parallel for schedule(static) if ((long)M * C >= PARALLEL_MIN)
  for (int m = 0; m < M; m++) {
    float* d = dinp + (size_t)idx[m] * C;
    const float* g = dout + (size_t)m * C;
    for (int c = 0; c < C; c++) d[c] += g[c];
  }
}

/* ---------------------------------------------------------------- layernorm */

void bf_layernorm_fwd(float* out, float* mean, float* rstd, const float* inp, const float* w, const float* b,
                      int N, int C, float eps) {
#pragma omp parallel for schedule(static) if ((long)N * C >= PARALLEL_MIN)
  for (int r = 0; r < N; r++) {
    const float* x = inp + (size_t)r * C;
    float m = 0.0f;
    for (int c = 0; c < C; c++) m += x[c];
    m /= C;
    float var = 0.0f;
    for (int c = 0; c < C; c++) {
      const float d = x[c] - m;
      var += d * d;
    }
    var /= C;
    const float s = 1.0f / sqrtf(var + eps);
    float* o = out + (size_t)r * C;
    for (int c = 0; c < C; c++) o[c] = (x[c] - m) * s * w[c] + b[c];
    mean[r] = m;
    rstd[r] = s;
  }
}

/* In the forward pass y = xhat * w + b with xhat = (x - mean) * rstd, so
 *   dw += sum_rows dy * xhat, db += sum_rows dy,
 *   dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)), dxhat = dy * w.
 * dinp may alias dout. */
void bf_layernorm_bwd(float* dinp, float* dw, float* db, const float* dout, const float* inp, const float* mean,
                      const float* rstd, const float* w, int N, int C) {
  /* parameter gradients first (dinp may overwrite dout), split by columns */
#pragma omp parallel if ((long)N * C >= PARALLEL_MIN)
  {
    const int nt = omp_get_num_threads(), tid = omp_get_thread_num();
    const int c0 = (int)((long)C * tid / nt), c1 = (int)((long)C * (tid + 1) / nt);
    for (int r = 0; r < N; r++) {
      const float* x = inp + (size_t)r * C;
      const float* dy = dout + (size_t)r * C;
      const float m = mean[r], s = rstd[r];
      for (int c = c0; c < c1; c++) {
        dw[c] += dy[c] * ((x[c] - m) * s);
        db[c] += dy[c];
      }
    }
  }
#pragma omp parallel for schedule(static) if ((long)N * C >= PARALLEL_MIN)
  for (int r = 0; r < N; r++) {
    const float* x = inp + (size_t)r * C;
    const float* dy = dout + (size_t)r * C;
    float* dx = dinp + (size_t)r * C;
    const float m = mean[r], s = rstd[r];
    float dnorm_mean = 0.0f, dnorm_norm_mean = 0.0f;
    for (int c = 0; c < C; c++) {
      const float dn = dy[c] * w[c];
      dnorm_mean += dn;
      dnorm_norm_mean += dn * ((x[c] - m) * s);
    }
    dnorm_mean /= C;
    dnorm_norm_mean /= C;
    for (int c = 0; c < C; c++) {
      const float xhat = (x[c] - m) * s;
      dx[c] = s * (dy[c] * w[c] - dnorm_mean - xhat * dnorm_norm_mean);
    }
  }
}

/* ---------------------------------------------------------------- bias, GELU */

void bf_bias_add(float* out, const float* bias, int N, int D) {
#pragma omp parallel for schedule(static) if ((long)N * D >= PARALLEL_MIN)
  for (int r = 0; r < N; r++) {
    float* o = out + (size_t)r * D;
    for (int j = 0; j < D; j++) o[j] += bias[j];
  }
}

/* dbias (D) += column sums of dout (N,D), split by columns. */
void bf_bias_grad(float* dbias, const float* dout, int N, int D) {
#pragma omp parallel if ((long)N * D >= PARALLEL_MIN)
  {
    const int nt = omp_get_num_threads(), tid = omp_get_thread_num();
    const int j0 = (int)((long)D * tid / nt), j1 = (int)((long)D * (tid + 1) / nt);
    for (int r = 0; r < N; r++) {
      const float* g = dout + (size_t)r * D;
      for (int j = j0; j < j1; j++) dbias[j] += g[j];
    }
  }
}

/* Phi(x) = 0.5 (1 + erf(x / sqrt 2)) by Abramowitz & Stegun 7.1.26 (|erf error| < 1.5e-7), written without
 * branches, so the loops vectorize; kernels.ts uses the same formula. e = exp(-x^2 / 2), shared with phi(x). */
static inline float normal_cdf(float x, float e) {
  const float z = fabsf(x) * SQRT_2_OVER_PI_INV;
  const float t = 1.0f / (1.0f + 0.3275911f * z);
  const float poly = ((((1.061405429f * t - 1.453152027f) * t + 1.421413741f) * t - 0.284496736f) * t + 0.254829592f) * t;
  const float half_erf = 0.5f - 0.5f * poly * e; /* 0.5 * erf(|x| / sqrt 2) */
  return 0.5f + (x < 0.0f ? -half_erf : half_erf);
}

static inline float gelu(float x) { return x * normal_cdf(x, fast_expf(-0.5f * x * x)); }
/* d/dx x*Phi(x) = Phi(x) + x*phi(x) */
static inline float gelu_grad(float x) {
  const float e = fast_expf(-0.5f * x * x);
  return normal_cdf(x, e) + x * INV_SQRT_2PI * e;
}

void bf_gelu_fwd(float* out, const float* inp, int n) {
#pragma omp parallel for schedule(static) if ((long)n >= PARALLEL_MIN)
  for (int i = 0; i < n; i++) out[i] = gelu(inp[i]);
}

/* h (N,D) += bias; g = gelu(h): the first FFN GEMM's epilogue (h is kept for backward). */
void bf_bias_gelu_fwd(float* h, float* g, const float* bias, int N, int D) {
#pragma omp parallel for schedule(static) if ((long)N * D >= PARALLEL_MIN)
  for (int r = 0; r < N; r++) {
    float* hr = h + (size_t)r * D;
    float* gr = g + (size_t)r * D;
    for (int j = 0; j < D; j++) {
      const float x = hr[j] + bias[j];
      hr[j] = x;
      gr[j] = gelu(x);
    }
  }
}

/* dinp = dout * gelu'(inp); dinp may alias dout. */
void bf_gelu_bwd(float* dinp, const float* inp, const float* dout, int n) {
#pragma omp parallel for schedule(static) if ((long)n >= PARALLEL_MIN)
  for (int i = 0; i < n; i++) dinp[i] = dout[i] * gelu_grad(inp[i]);
}

/* ---------------------------------------------------------------- attention softmax */

/* probs (B,NH,T,T) = softmax_j(scale * scores + addmask[b, j]) in place; addmask (B,T) is 0 for real tokens and
 * the most negative float for padding (HF's extended attention mask). */
void bf_softmax_fwd(float* att, const float* addmask, int B, int NH, int T, float scale) {
  const int rows = B * NH * T;
#pragma omp parallel for schedule(static) if ((long)rows * T >= PARALLEL_MIN)
  for (int r = 0; r < rows; r++) {
    const int b = r / (NH * T);
    const float* am = addmask + (size_t)b * T;
    float* x = att + (size_t)r * T;
    float mx = -INFINITY;
    for (int j = 0; j < T; j++) {
      const float v = x[j] * scale + am[j];
      x[j] = v;
      mx = v > mx ? v : mx;
    }
    float sum = 0.0f;
    for (int j = 0; j < T; j++) {
      const float e = fast_expf(x[j] - mx);
      x[j] = e;
      sum += e;
    }
    const float inv = 1.0f / sum;
    for (int j = 0; j < T; j++) x[j] *= inv;
  }
}

/* In the forward pass p = softmax(scale * s + mask), so ds = scale * p * (dp - sum_j dp_j p_j). In place is fine. */
void bf_softmax_bwd(float* dscores, const float* dprobs, const float* probs, int rows, int T, float scale) {
#pragma omp parallel for schedule(static) if ((long)rows * T >= PARALLEL_MIN)
  for (int r = 0; r < rows; r++) {
    const float* p = probs + (size_t)r * T;
    const float* dp = dprobs + (size_t)r * T;
    float* ds = dscores + (size_t)r * T;
    float dot = 0.0f;
    for (int j = 0; j < T; j++) dot += dp[j] * p[j];
    for (int j = 0; j < T; j++) ds[j] = scale * p[j] * (dp[j] - dot);
  }
}

/* softmax_bwd behind attention dropout: probs_dropped = dropout(probs) from the forward, so an entry was kept iff
 * probs_dropped != 0 (a kept entry with probs == 0 contributes 0 either way) and dprobs = dprobs' * keep * drop_scale.
 * Saves replaying the dropout mask and a pass over (B, NH, T, T). In place is fine. */
void bf_softmax_dropout_bwd(float* dscores, const float* dprobs_dropped, const float* probs, const float* probs_dropped,
                            int rows, int T, float scale, float drop_scale) {
#pragma omp parallel for schedule(static) if ((long)rows * T >= PARALLEL_MIN)
  for (int r = 0; r < rows; r++) {
    const float* p = probs + (size_t)r * T;
    const float* pd = probs_dropped + (size_t)r * T;
    const float* dpd = dprobs_dropped + (size_t)r * T;
    float* ds = dscores + (size_t)r * T;
    float dot = 0.0f;
    for (int j = 0; j < T; j++) dot += (pd[j] != 0.0f ? dpd[j] * drop_scale : 0.0f) * p[j];
    for (int j = 0; j < T; j++) ds[j] = scale * p[j] * ((pd[j] != 0.0f ? dpd[j] * drop_scale : 0.0f) - dot);
  }
}

/* ---------------------------------------------------------------- classification losses */

/* Row-wise softmax cross-entropy over logits (N,V) + bias (V, may be NULL: then none), labels (N) with < 0 =
 * ignored. logits get the bias added in place; losses[r] = -log softmax(row)[label] (0 when ignored),
 * preds[r] = argmax (as float). want_grad: logits are overwritten with grad_scale * (softmax - onehot)
 * (0 on ignored rows). Folding the bias in saves a pass over the (rows, V) MLM logits. */
void bf_softmax_ce(float* logits, const float* bias, const int32_t* labels, float* losses, float* preds, int N,
                   int V, float grad_scale, int want_grad) {
#pragma omp parallel for schedule(static) if ((long)N * V >= PARALLEL_MIN)
  for (int r = 0; r < N; r++) {
    float* x = logits + (size_t)r * V;
    const int y = labels[r];
    float mx = -INFINITY;
    if (bias) {
      for (int j = 0; j < V; j++) {
        const float v = x[j] + bias[j];
        x[j] = v;
        mx = v > mx ? v : mx;
      }
    } else {
      for (int j = 0; j < V; j++) mx = x[j] > mx ? x[j] : mx;
    }
    int arg = 0;
    while (arg < V - 1 && x[arg] != mx) arg++;
    preds[r] = (float)arg;
    if (y < 0) {
      losses[r] = 0.0f;
      if (want_grad) memset(x, 0, sizeof(float) * V);
      continue;
    }
    float sum = 0.0f;
    for (int j = 0; j < V; j++) sum += fast_expf(x[j] - mx);
    const float lse = mx + logf(sum);
    losses[r] = lse - x[y];
    if (want_grad) {
      const float inv = grad_scale / sum;
      for (int j = 0; j < V; j++) x[j] = fast_expf(x[j] - mx) * inv;
      x[y] -= grad_scale;
    }
  }
}

/* ---------------------------------------------------------------- optimizer */

/* torch.optim.AdamW on n elements; g is multiplied by grad_scale first (clipping and accumulation). */
void bf_adamw(float* p, const float* g, float* m, float* v, int n, float lr, float beta1, float beta2, float eps,
              float wd, float bc1, float bc2, float grad_scale) {
  const float decay = 1.0f - lr * wd;
  const float step = lr / bc1;
  const float rbc2 = 1.0f / sqrtf(bc2);
#pragma omp parallel for schedule(static) if ((long)n >= PARALLEL_MIN)
  for (int i = 0; i < n; i++) {
    const float gi = g[i] * grad_scale;
    const float mi = beta1 * m[i] + (1.0f - beta1) * gi;
    const float vi = beta2 * v[i] + (1.0f - beta2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    p[i] = p[i] * decay - step * mi / (sqrtf(vi) * rbc2 + eps);
  }
}

#define NORM_CHUNK 65536
/* sum of squares in double over fixed chunks, the chunk sums added in order: the same bits for any thread count. */
double bf_sumsq(const float* x, double n_d) {
  const long n = (long)n_d;
  const long chunks = (n + NORM_CHUNK - 1) / NORM_CHUNK;
  double* partial = (double*)malloc(sizeof(double) * (size_t)(chunks > 0 ? chunks : 1));
#pragma omp parallel for schedule(static) if ((long)n >= PARALLEL_MIN)
  for (long k = 0; k < chunks; k++) {
    const long i0 = k * NORM_CHUNK, i1 = i0 + NORM_CHUNK < n ? i0 + NORM_CHUNK : n;
    double s = 0.0;
    for (long i = i0; i < i1; i++) s += (double)x[i] * x[i];
    partial[k] = s;
  }
  double total = 0.0;
  for (long k = 0; k < chunks; k++) total += partial[k];
  free(partial);
  return total;
}

void bf_fill(float* x, double n_d, float value) {
  const long n = (long)n_d;
#pragma omp parallel for schedule(static) if (n >= PARALLEL_MIN)
  for (long i = 0; i < n; i++) x[i] = value;
}

/* ---------------------------------------------------------------- batched attention GEMMs */

#include <dlfcn.h>

typedef void (*sgemm_fn)(int order, int transA, int transB, int M, int N, int K, float alpha, const float* A,
                         int lda, const float* B, int ldb, float beta, float* C, int ldc);
typedef void (*set_threads_fn)(int n);
static sgemm_fn blas_sgemm = NULL;
static set_threads_fn blas_set_threads = NULL;

/* Finds cblas_sgemm in the BLAS library the engine loaded (dlopen of a loaded library returns it again). */
int bf_attach_blas(const char* path) {
  void* lib = dlopen(path, RTLD_NOW | RTLD_GLOBAL);
  if (!lib) return 0;
  blas_sgemm = (sgemm_fn)dlsym(lib, "cblas_sgemm");
  blas_set_threads = (set_threads_fn)dlsym(lib, "openblas_set_num_threads");
  return blas_sgemm != NULL && blas_set_threads != NULL;
}

/* The per-head GEMMs of attention, nb*nh of them: matrix (b, h) of X starts at X + b*sXb + h*sXh (elements).
 * The heads run in parallel on the OpenMP threads with OpenBLAS single-threaded inside, instead of one
 * 2-thread OpenBLAS call (and one FFI call) per small T x T x HS product. blas_threads restores OpenBLAS. */
void bf_batched_sgemm(int transA, int transB, int M, int N, int K, float alpha, const float* A, int lda, double sAb,
                      double sAh, const float* B, int ldb, double sBb, double sBh, float beta, float* C, int ldc,
                      double sCb, double sCh, int nb, int nh, int blas_threads) {
  const long aB = (long)sAb, aH = (long)sAh, bB = (long)sBb, bH = (long)sBh, cB = (long)sCb, cH = (long)sCh;
  blas_set_threads(1);
#pragma omp parallel for schedule(static)
  for (int i = 0; i < nb * nh; i++) {
    const int b = i / nh, h = i % nh;
    blas_sgemm(101, transA ? 112 : 111, transB ? 112 : 111, M, N, K, alpha, A + b * aB + h * aH, lda,
               B + b * bB + h * bH, ldb, beta, C + b * cB + h * cH, ldc);
  }
  blas_set_threads(blas_threads);
}
