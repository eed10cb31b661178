// The CPU attention/encode kernels, written once over a small vector abstraction and compiled
// once per instruction set: kernels_scalar.cpp (W = 1), kernels_avx2.cpp (W = 8),
// kernels_avx512.cpp (W = 16). Each of those files defines, inside its own namespace, before
// including this file:
//   constexpr int W; type VF (W floats); VF vzero(); VF vset1(float); VF vloadf(const float*);
//   void vstoref(float*, VF); VF vfma(VF a, VF b, VF c) (a·b + c); VF vmul(VF, VF);
//   VF vmax(VF, VF); float vhmax(VF);
//   VF vadd(VF, VF); VF vsub(VF, VF); float vhsum(VF); VF vexp(VF) (x ≤ 0);
//   VF vload_f16(const uint8_t*)        W fp16 → float
//   VF vload_i8(const uint8_t*)         W int8 → float
//   VF vload_nib(const uint8_t*, int s) W bytes → float(((b >> s) & 15) − 8)
//   struct Lut { Lut(const float* table, int bits); };  (a code → value table in registers)
//   template <int B> VF vdecode(const Lut&, const uint8_t* p, int avail, int back)
//       values of the W codes of a B-bit LSB-first stream starting at byte p (W·B/8 bytes),
//       with avail readable bytes from p on and back readable bytes before p
//   void vhsum4(VF a, VF b, VF c, VF d, float out[4])   the four horizontal sums
//   VF vfwht_inner(VF) (W > 1)  the Walsh-Hadamard stages h = 1 .. W/2 within one vector
//   double vnorm2(const float* x, int d)     Σ x² (accumulated in double)
//   void pack_codes(const uint8_t* idx, int d, int bits, uint8_t* out)
//   float load_half(const uint8_t*); void store_half(uint8_t*, float)
//   int vquantize(const float* y, int d, const float* bnd, int nb, uint8_t* idx) — idx_j =
//       #{k : bnd[k] < y_j}
// The kernels loop over tokens (scores: one token, all coordinates, G query heads at once) or
// over coordinate chunks (accumulate: G accumulators stay in registers while tokens stream).
// Coordinates past the last full chunk (d % W) take a scalar tail.

// ------------------------------------------------------------------ sources of values
inline uint32_t code_at(const uint8_t* codes, int j, int bits) {
  const int pos = j * bits, b0 = pos >> 3, sh = pos & 7;
  uint32_t v = uint32_t(codes[b0]) >> sh;
  if (sh + bits > 8) v |= uint32_t(codes[b0 + 1]) << (8 - sh);
  return v & ((1u << bits) - 1);
}

template <int B>
struct RowsSrc {
  const CodeRows& r;
  Lut lut;
  int code_bytes;
  explicit RowsSrc(const CodeRows& rows)
      : r(rows), lut(rows.table, B), code_bytes((rows.dim * B + 7) / 8) {}
  int dim() const { return r.dim; }
  const uint8_t* codes(size_t t) const { return r.base + t * r.stride + r.code_off; }
  VF load(size_t t, int c) const {
#if TQ_KERNEL_W1
    return vdecode1<B>(lut, codes(t), c);
#else
    const int off = c * W * B / 8;
    return vdecode<B>(lut, codes(t) + off, code_bytes - off, int(r.code_off) + off);
#endif
  }
  float at(size_t t, int j) const { return r.table[code_at(codes(t), j, B)]; }
  float scale(size_t t) const {
    return r.scale_mul * load_half(r.base + t * r.stride + r.scale_off);
  }
};

struct F32Src {
  const uint8_t* p;
  int d;
  int dim() const { return d; }
  const float* row(size_t t) const { return reinterpret_cast<const float*>(p) + t * d; }
  VF load(size_t t, int c) const { return vloadf(row(t) + c * W); }
  float at(size_t t, int j) const { return row(t)[j]; }
  float scale(size_t) const { return 1.0f; }
};

struct F16Src {
  const uint8_t* p;
  int d;
  int dim() const { return d; }
  const uint8_t* row(size_t t) const { return p + t * size_t(d) * 2; }
  VF load(size_t t, int c) const { return vload_f16(row(t) + c * W * 2); }
  float at(size_t t, int j) const { return load_half(row(t) + 2 * j); }
  float scale(size_t) const { return 1.0f; }
};

// ggml q8_0: blocks of 34 bytes along the head dim (fp16 d, int8 qs[32]).
struct Q8Src {
  const uint8_t* p;
  int d;
  int dim() const { return d; }
  const uint8_t* row(size_t t) const { return p + t * size_t(d / 32) * 34; }
  VF load(size_t t, int c) const {
    const uint8_t* blk = row(t) + size_t(c * W / 32) * 34;
    return vmul(vload_i8(blk + 2 + (c * W) % 32), vset1(load_half(blk)));
  }
  float at(size_t t, int j) const {
    const uint8_t* blk = row(t) + size_t(j / 32) * 34;
    return load_half(blk) * float(int8_t(blk[2 + j % 32]));
  }
  float scale(size_t) const { return 1.0f; }
};

// ggml q4_0: blocks of 18 bytes (fp16 d, 16 bytes: low nibbles 0..15, high nibbles 16..31).
struct Q4Src {
  const uint8_t* p;
  int d;
  int dim() const { return d; }
  const uint8_t* row(size_t t) const { return p + t * size_t(d / 32) * 18; }
  VF load(size_t t, int c) const {
    const uint8_t* blk = row(t) + size_t(c * W / 32) * 18;
    const int e = (c * W) % 32;
    return vmul(vload_nib(blk + 2 + e % 16, e >= 16 ? 4 : 0), vset1(load_half(blk)));
  }
  float at(size_t t, int j) const {
    const uint8_t* blk = row(t) + size_t(j / 32) * 18;
    const int e = j % 32;
    const int q = (blk[2 + e % 16] >> (e >= 16 ? 4 : 0)) & 15;
    return load_half(blk) * float(q - 8);
  }
  float scale(size_t) const { return 1.0f; }
};

// ------------------------------------------------------------------ generic kernels
// out[g·ldo + t] (+)= scale(t) · Σ_j q_g[j] · value_t[j]
template <int G, class Src>
void score_g(const Src& src, size_t n, const float* q, float* out, size_t ldo, bool add) {
  const int d = src.dim(), nc = d / W;
  for (size_t t = 0; t < n; ++t) {
    VF acc[G];
    for (int g = 0; g < G; ++g) acc[g] = vzero();
    for (int c = 0; c < nc; ++c) {
      const VF x = src.load(t, c);
      for (int g = 0; g < G; ++g) acc[g] = vfma(x, vloadf(q + g * d + c * W), acc[g]);
    }
    float s[4];
    if constexpr (G == 1) {
      s[0] = vhsum(acc[0]);
    } else {
      vhsum4(acc[0], acc[1], G > 2 ? acc[2 % G] : vzero(), G > 3 ? acc[3 % G] : vzero(), s);
    }
    for (int j = nc * W; j < d; ++j) {
      const float x = src.at(t, j);
      for (int g = 0; g < G; ++g) s[g] += q[g * d + j] * x;
    }
    const float sc = src.scale(t);
    for (int g = 0; g < G; ++g) {
      float& o = out[g * ldo + t];
      o = add ? o + sc * s[g] : sc * s[g];
    }
  }
}

// acc[g·lda + j] += Σ_t w[g·ldw + t] · scale(t) · value_t[j]
template <int G, class Src>
void acc_g(const Src& src, size_t n, const float* w, size_t ldw, float* acc, size_t lda) {
  constexpr size_t kStep = 64;
  const int d = src.dim(), nc = d / W;
  float ws[G][kStep];
  for (size_t t0 = 0; t0 < n; t0 += kStep) {
    const size_t m = n - t0 < kStep ? n - t0 : kStep;
    for (size_t i = 0; i < m; ++i) {
      const float sc = src.scale(t0 + i);
      for (int g = 0; g < G; ++g) ws[g][i] = w[g * ldw + t0 + i] * sc;
    }
    for (int c = 0; c < nc; ++c) {
      VF a[G];
      for (int g = 0; g < G; ++g) a[g] = vloadf(acc + g * lda + c * W);
      for (size_t i = 0; i < m; ++i) {
        const VF x = src.load(t0 + i, c);
        for (int g = 0; g < G; ++g) a[g] = vfma(x, vset1(ws[g][i]), a[g]);
      }
      for (int g = 0; g < G; ++g) vstoref(acc + g * lda + c * W, a[g]);
    }
    for (int j = nc * W; j < d; ++j)
      for (size_t i = 0; i < m; ++i) {
        const float x = src.at(t0 + i, j);
        for (int g = 0; g < G; ++g) acc[g * lda + j] += ws[g][i] * x;
      }
  }
}

// Query heads in groups of up to 4 (their accumulators stay in registers).
template <class Src>
void score_any(const Src& src, size_t n, const float* q, int G, float* out, size_t ldo, bool add) {
  const int d = src.dim();
  for (int g0 = 0; g0 < G; g0 += 4) {
    const float* qg = q + size_t(g0) * d;
    float* og = out + size_t(g0) * ldo;
    switch (G - g0 < 4 ? G - g0 : 4) {
      case 1:
        score_g<1>(src, n, qg, og, ldo, add);
        break;
      case 2:
        score_g<2>(src, n, qg, og, ldo, add);
        break;
      case 3:
        score_g<3>(src, n, qg, og, ldo, add);
        break;
      default:
        score_g<4>(src, n, qg, og, ldo, add);
        break;
    }
  }
}

template <class Src>
void acc_any(const Src& src, size_t n, const float* w, size_t ldw, int G, float* acc, size_t lda) {
  for (int g0 = 0; g0 < G; g0 += 4) {
    const float* wg = w + size_t(g0) * ldw;
    float* ag = acc + size_t(g0) * lda;
    switch (G - g0 < 4 ? G - g0 : 4) {
      case 1:
        acc_g<1>(src, n, wg, ldw, ag, lda);
        break;
      case 2:
        acc_g<2>(src, n, wg, ldw, ag, lda);
        break;
      case 3:
        acc_g<3>(src, n, wg, ldw, ag, lda);
        break;
      default:
        acc_g<4>(src, n, wg, ldw, ag, lda);
        break;
    }
  }
}

// Rows with more than 4 bits per code use a plain per-coordinate table lookup.
struct RowsSrcWide {
  const CodeRows& r;
  int dim() const { return r.dim; }
  const uint8_t* codes(size_t t) const { return r.base + t * r.stride + r.code_off; }
  VF load(size_t t, int c) const {
    alignas(64) float v[W];
    for (int i = 0; i < W; ++i) v[i] = r.table[code_at(codes(t), c * W + i, r.bits)];
    return vloadf(v);
  }
  float at(size_t t, int j) const { return r.table[code_at(codes(t), j, r.bits)]; }
  float scale(size_t t) const {
    return r.scale_mul * load_half(r.base + t * r.stride + r.scale_off);
  }
};

void k_score_rows(const CodeRows& r, size_t n, const float* q, int G, float* out, size_t ldo,
                  bool add) {
  switch (r.bits) {
    case 1:
      score_any(RowsSrc<1>(r), n, q, G, out, ldo, add);
      break;
    case 2:
      score_any(RowsSrc<2>(r), n, q, G, out, ldo, add);
      break;
    case 3:
      score_any(RowsSrc<3>(r), n, q, G, out, ldo, add);
      break;
    case 4:
      score_any(RowsSrc<4>(r), n, q, G, out, ldo, add);
      break;
    default:
      score_any(RowsSrcWide{r}, n, q, G, out, ldo, add);
      break;
  }
}

void k_acc_rows(const CodeRows& r, size_t n, const float* w, size_t ldw, int G, float* acc,
                size_t lda) {
  switch (r.bits) {
    case 1:
      acc_any(RowsSrc<1>(r), n, w, ldw, G, acc, lda);
      break;
    case 2:
      acc_any(RowsSrc<2>(r), n, w, ldw, G, acc, lda);
      break;
    case 3:
      acc_any(RowsSrc<3>(r), n, w, ldw, G, acc, lda);
      break;
    case 4:
      acc_any(RowsSrc<4>(r), n, w, ldw, G, acc, lda);
      break;
    default:
      acc_any(RowsSrcWide{r}, n, w, ldw, G, acc, lda);
      break;
  }
}

#define TQ_FLOAT_KERNELS(NAME, SRC)                                                             \
  void k_score_##NAME(const uint8_t* codes, size_t n, int d, const float* q, int G, float* out, \
                      size_t ldo) {                                                             \
    score_any(SRC{codes, d}, n, q, G, out, ldo, false);                                         \
  }                                                                                             \
  void k_acc_##NAME(const uint8_t* codes, size_t n, int d, const float* w, size_t ldw, int G,   \
                    float* acc, size_t lda) {                                                   \
    acc_any(SRC{codes, d}, n, w, ldw, G, acc, lda);                                             \
  }
TQ_FLOAT_KERNELS(f32, F32Src)
TQ_FLOAT_KERNELS(f16, F16Src)
TQ_FLOAT_KERNELS(q8_0, Q8Src)
TQ_FLOAT_KERNELS(q4_0, Q4Src)
#undef TQ_FLOAT_KERNELS

float k_exp_sum(float* s, size_t n, float m) {
  VF acc = vzero();
  const VF vm = vset1(m);
  size_t i = 0;
  for (; i + W <= n; i += W) {
    const VF e = vexp(vsub(vloadf(s + i), vm));
    vstoref(s + i, e);
    acc = vadd(acc, e);
  }
  float sum = vhsum(acc);
  for (; i < n; ++i) {
    s[i] = std::exp(s[i] - m);
    sum += s[i];
  }
  return sum;
}

void k_scale(float* y, size_t n, float a) {
  const VF va = vset1(a);
  size_t i = 0;
  for (; i + W <= n; i += W) vstoref(y + i, vmul(vloadf(y + i), va));
  for (; i < n; ++i) y[i] *= a;
}

float k_scale_max(float* y, size_t n, float a) {
  const VF va = vset1(a);
  float mx = -std::numeric_limits<float>::infinity();
  size_t i = 0;
  if (n >= size_t(W)) {
    VF m = vmul(vloadf(y), va);
    for (; i + W <= n; i += W) {
      const VF v = vmul(vloadf(y + i), va);
      vstoref(y + i, v);
      m = vmax(m, v);
    }
    mx = vhmax(m);
  }
  for (; i < n; ++i) mx = std::max(mx, y[i] *= a);
  return mx;
}

// Same butterflies in the same order as fwht_ref: bit-identical results.
void k_fwht(float* x, int n) {
  int h = 1;
#if !TQ_KERNEL_W1
  if (n >= W) {  // stages h < W inside each vector: x·(±1) + partner, the same a+b / a−b
    for (int i = 0; i < n; i += W) vstoref(x + i, vfwht_inner(vloadf(x + i)));
    h = W;
  }
#endif
  for (; h < n && h < W; h <<= 1)
    for (int i = 0; i < n; i += 2 * h)
      for (int j = i; j < i + h; ++j) {
        const float a = x[j], b = x[j + h];
        x[j] = a + b;
        x[j + h] = a - b;
      }
  for (; h < n; h <<= 1)
    for (int i = 0; i < n; i += 2 * h)
      for (int j = i; j < i + h; j += W) {
        const VF a = vloadf(x + j), b = vloadf(x + j + h);
        vstoref(x + j, vadd(a, b));
        vstoref(x + j + h, vsub(a, b));
      }
}

// TurboQuant_mse encode with the randomised Hadamard rotation; same arithmetic as
// TurboMseCodec::encode_one (norm in double, u = x/n, y = (1/√d)·H·D·u, nearest centroid).
void k_encode_mse(const float* x, size_t n, int d, const float* signs, int bits, const float* bnd,
                  const float* cent, bool nc, uint8_t* out, size_t stride, size_t scale_off,
                  size_t code_off) {
  alignas(64) float y[1024];
  alignas(64) uint8_t idx[1024];
  const float s = 1.0f / std::sqrt(float(d));
  const int nb = (1 << bits) - 1;
  for (size_t t = 0; t < n; ++t) {
    const float* xt = x + t * size_t(d);
    uint8_t* row = out + t * stride;
    const float nrm = float(std::sqrt(vnorm2(xt, d)));
    if (nrm == 0.0f) {
      store_half(row + scale_off, 0.0f);
      for (int j = 0; j < d; ++j) idx[j] = 0;
      pack_codes(idx, d, bits, row + code_off);
      continue;
    }
    const float inv = 1.0f / nrm;
    const VF vinv = vset1(inv);
    int j = 0;
    for (; j + W <= d; j += W) vstoref(y + j, vmul(vmul(vloadf(xt + j), vinv), vloadf(signs + j)));
    for (; j < d; ++j) y[j] = xt[j] * inv * signs[j];
    k_fwht(y, d);
    k_scale(y, size_t(d), s);
    vquantize(y, d, bnd, nb, idx);
    float stored = nrm;
    if (nc) {
      double c2 = 0;
      for (int k = 0; k < d; ++k) c2 += double(cent[idx[k]]) * cent[idx[k]];
      stored = c2 > 0 ? float(nrm / std::sqrt(c2)) : 0.0f;
    }
    store_half(row + scale_off, stored);
    pack_codes(idx, d, bits, row + code_off);
  }
}

// PolarQuant decode, plain scalar (the reference; the AVX-512 level has a vector version).
inline void k_polar_decode(const uint8_t* codes, size_t n, size_t stride, int groups,
                           const PolarTables& tb, float* y) {
  const size_t bytes = (size_t(groups) * 62 + 7) / 8;
  for (size_t t = 0; t < n; ++t) {
    const uint8_t* blk = codes + t * stride;
    for (int g = 0; g < groups; ++g) {
      // the group's 62 bits, read at once (a shift of the ≤ 9 bytes that hold them)
      const size_t o = size_t(g) * 62, b0 = o / 8;
      unsigned __int128 v = 0;
      std::memcpy(&v, blk + b0, std::min<size_t>(9, bytes - b0));
      const uint64_t bits = uint64_t(v >> (o % 8));
      float r[8] = {load_half(reinterpret_cast<const uint8_t*>(&bits))};
      int count = 1;
      const int pos[3] = {48, 56, 60};  // level-2, -3, -4 codes (2 bits each)
      for (int lv = 2; lv >= 0; --lv) {  // level 4 → 2
        for (int i = count - 1; i >= 0; --i) {
          const int k = int((bits >> (pos[lv] + 2 * i)) & 3);
          const float ri = r[i];
          r[2 * i] = ri * tb.lc[lv][k];
          r[2 * i + 1] = ri * tb.ls[lv][k];
        }
        count *= 2;
      }
      float* out = y + t * size_t(16 * groups) + 16 * g;
      for (int i = 0; i < 8; ++i) {
        const int k = int((bits >> (16 + 4 * i)) & 15);
        out[2 * i] = r[i] * tb.l1c[k];
        out[2 * i + 1] = r[i] * tb.l1s[k];
      }
    }
  }
}

// f16 rows → f32 (exact at every level: F16C and the scalar conversion agree bit for bit).
void k_f16_to_f32(const uint8_t* h, size_t n, float* x) {
  size_t i = 0;
  for (; i + W <= n; i += W) vstoref(x + i, vload_f16(h + 2 * i));
  for (; i < n; ++i) x[i] = load_half(h + 2 * i);
}

#ifndef TQ_POLAR_DECODE_FN
#define TQ_POLAR_DECODE_FN k_polar_decode
#endif
#ifndef TQ_SCORE_ROWS_FN
#define TQ_SCORE_ROWS_FN k_score_rows
#endif
#ifndef TQ_ACC_ROWS_FN
#define TQ_ACC_ROWS_FN k_acc_rows
#endif
const Kernels kTable = {
    kLevel,    TQ_SCORE_ROWS_FN, TQ_ACC_ROWS_FN, k_score_f32,  k_acc_f32,  k_score_f16,
    k_acc_f16, k_score_q8_0,     k_acc_q8_0,     k_score_q4_0, k_acc_q4_0, k_exp_sum,
    k_scale,   k_scale_max,      k_fwht,         k_encode_mse, TQ_POLAR_DECODE_FN,
    k_f16_to_f32,
};
