// Model-link inference kernels: every link into every target that did not run, the per-target
// ensembles and the output activations, for one tick or a batch of frames, in one launch.
//
// The CPU reference is src/links/predict.rs (Predictor::predict), src/links/mlp.rs (forward) and
// src/links/ensemble.rs (forward); the weight arenas are the same bytes as LinkSet.params and
// EnsembleSet.params (see those files and docs/bundle-format.md for the block layouts):
//   link block:     mean[in] inv_std[in] W1[hidden][in] b1[hidden] W2[out][hidden] b2[out]
//   ensemble block: W[k][out][out] alpha[k][out] b[out]            (k = n - 1 source slots)
//
// Descriptor tables (u32, built once on the host, src/gpu/layout.rs):
//   models[4·m + {0,1,2,3}] = row offset, output size, kind, ensemble block offset
//   links [4·l + {0,1,2,3}] = parameter block offset, input, hidden, output   (l = j·k + slot)
//
// Weights are read through `load_w`, so the arenas can be f32 or f16 (raw half bits); every sum is
// accumulated in f32. Dot products use the same eight-lane order as mlp::dot on the CPU.
//
// Compiled at run time by NVRTC (no headers needed) and compile-checked in CI by
// .ci/check-kernels.sh for compute_72 and compute_87.

#define MAX_SLOTS 16
#define KIND_CLASS 0u
#define KIND_MULTILABEL 1u

typedef unsigned int u32;
typedef unsigned long long u64;

// Dynamic shared memory of every kernel below, sized by the host.
extern __shared__ float smem[];

__device__ __forceinline__ float load_w(const float* p, u32 i) { return __ldg(p + i); }

__device__ __forceinline__ float load_w(const unsigned short* p, u32 i) {
    unsigned short h = __ldg(p + i);
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}

// Dot of weights w[0..n) with shared values x[0..n), summed like mlp::dot: lane l takes elements
// l, l+8, ...; lanes combined pairwise; then the tail.
template <typename W>
__device__ __forceinline__ float dot8(const W* w, u32 wo, const float* x, u32 n) {
    float acc[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
    u32 full = n & ~7u;
    for (u32 c = 0; c < full; c += 8) {
#pragma unroll
        for (int l = 0; l < 8; ++l) acc[l] += load_w(w, wo + c + l) * x[c + l];
    }
    float tail = 0.f;
    for (u32 c = full; c < n; ++c) tail += load_w(w, wo + c) * x[c];
    return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail;
}

__device__ __forceinline__ u32 source_of_slot(u32 j, u32 s) { return s < j ? s : s + 1; }

// Per-block slot plan: which slots run and where their normalised inputs and hidden activations
// live in shared memory (prefix sums over the running slots only).
struct Plan {
    u32 k, nslots;
    u32 slot[MAX_SLOTS];  // running slots, in slot order
    u32 xo[MAX_SLOTS + 1];
    u32 ao[MAX_SLOTS + 1];
};

__device__ __forceinline__ void make_plan(Plan& p, const u32* links, u32 j, u32 k, u64 slots) {
    p.k = k;
    p.nslots = 0;
    p.xo[0] = 0;
    p.ao[0] = 0;
    for (u32 s = 0; s < k; ++s) {
        if ((slots >> s & 1ull) == 0) continue;
        const u32* d = links + 4u * (j * k + s);
        u32 r = p.nslots++;
        p.slot[r] = s;
        p.xo[r + 1] = p.xo[r] + d[1];
        p.ao[r + 1] = p.ao[r] + d[2];
    }
}

// Index r of the running slot whose range [off[r], off[r+1]) holds t.
__device__ __forceinline__ u32 find_run(const u32* off, u32 nslots, u32 t) {
    u32 r = 0;
    while (r + 1 < nslots && off[r + 1] <= t) ++r;
    return r;
}

// Every running link into target j for one frame: z[s·out + o] (pre-activation). xn and a are
// shared scratch; ends with a barrier.
template <typename W>
__device__ void links_into(const Plan& p, const W* lp, const u32* models, const u32* links, u32 j,
                           const float* row, float* xn, float* a, float* z) {
    const u32 tid = threadIdx.x, nt = blockDim.x, k = p.k, ns = p.nslots;
    const u32 nout = models[4u * j + 1];
    // 1. x̂ = (x − mean)·inv_std for every running link.
    for (u32 t = tid; t < p.xo[ns]; t += nt) {
        u32 r = find_run(p.xo, ns, t), s = p.slot[r];
        const u32* d = links + 4u * (j * k + s);
        u32 i = t - p.xo[r], src = source_of_slot(j, s);
        float x = row[models[4u * src]  + i];
        xn[t] = (x - load_w(lp, d[0] + i)) * load_w(lp, d[0] + d[1] + i);
    }
    __syncthreads();
    // 2. a = relu(W1·x̂ + b1).
    for (u32 t = tid; t < p.ao[ns]; t += nt) {
        u32 r = find_run(p.ao, ns, t), s = p.slot[r];
        const u32* d = links + 4u * (j * k + s);
        u32 ni = d[1], nh = d[2], h = t - p.ao[r];
        u32 w1 = d[0] + 2u * ni;
        float v = load_w(lp, w1 + nh * ni + h) + dot8(lp, w1 + h * ni, xn + p.xo[r], ni);
        a[t] = fmaxf(v, 0.f);
    }
    __syncthreads();
    // 3. z = W2·a + b2.
    for (u32 t = tid; t < ns * nout; t += nt) {
        u32 r = t / nout, o = t - r * nout, s = p.slot[r];
        const u32* d = links + 4u * (j * k + s);
        u32 ni = d[1], nh = d[2];
        u32 w2 = d[0] + 2u * ni + nh * ni + nh;
        z[s * nout + o] = load_w(lp, w2 + nout * nh + o) + dot8(lp, w2 + o * nh, a + p.ao[r], nh);
    }
    __syncthreads();
}

// Ensemble of target j over the running slots of p (z: k·out link outputs), then the activation;
// writes the out values to dst. u and y are shared scratch.
template <typename W>
__device__ void ensemble_into(const Plan& p, const W* ep, const u32* models, u32 j, const float* z,
                              float* u, float* y, float* dst) {
    const u32 tid = threadIdx.x, nt = blockDim.x, k = p.k, ns = p.nslots;
    const u32 nout = models[4u * j + 1], kind = models[4u * j + 2], eo = models[4u * j + 3];
    // 4. u_s = W_s·z_s for every running slot.
    for (u32 t = tid; t < ns * nout; t += nt) {
        u32 r = t / nout, o = t - r * nout, s = p.slot[r];
        u[s * nout + o] = dot8(ep, eo + (s * nout + o) * nout, z + s * nout, nout);
    }
    __syncthreads();
    // 5. y[o] = b[o] + Σ_s softmax_s(α[s][o])·u_s[o] over the running slots (b alone when none).
    const u32 alpha = eo + k * nout * nout, bias = alpha + k * nout;
    for (u32 o = tid; o < nout; o += nt) {
        float m = __int_as_float(0xff800000u);
        for (u32 r = 0; r < ns; ++r) m = fmaxf(m, load_w(ep, alpha + p.slot[r] * nout + o));
        float num = 0.f, den = 0.f;
        for (u32 r = 0; r < ns; ++r) {
            u32 s = p.slot[r];
            float e = expf(load_w(ep, alpha + s * nout + o) - m);
            num += e * u[s * nout + o];
            den += e;
        }
        y[o] = load_w(ep, bias + o) + (den > 0.f ? num / den : 0.f);
    }
    __syncthreads();
    // 6. Activation: softmax (class), sigmoid (multilabel), identity.
    if (kind == KIND_CLASS) {
        __shared__ float red[2];
        if (tid < 32) {
            float m = __int_as_float(0xff800000u);
            for (u32 o = tid; o < nout; o += 32) m = fmaxf(m, y[o]);
            for (int w = 16; w > 0; w >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, w));
            float s = 0.f;
            for (u32 o = tid; o < nout; o += 32) s += expf(y[o] - m);
            for (int w = 16; w > 0; w >>= 1) s += __shfl_xor_sync(0xffffffffu, s, w);
            if (tid == 0) {
                red[0] = m;
                red[1] = s;
            }
        }
        __syncthreads();
        for (u32 o = tid; o < nout; o += nt) dst[o] = expf(y[o] - red[0]) / red[1];
    } else if (kind == KIND_MULTILABEL) {
        for (u32 o = tid; o < nout; o += nt) dst[o] = 1.f / (1.f + expf(-y[o]));
    } else {
        for (u32 o = tid; o < nout; o += nt) dst[o] = y[o];
    }
}

// Slot mask of target j from a model mask (drop bit j, shift the higher bits down).
__device__ __forceinline__ u64 compress_mask(u64 mask, u32 j) {
    u64 low = mask & ((1ull << j) - 1ull);
    u64 high = (mask >> (j + 1)) << j;
    return low | high;
}

// Shared-memory carve-up; the host sizes it as the maximum over targets (src/gpu/layout.rs).
struct Smem {
    float *xn, *a, *z, *u, *y;
};

__device__ __forceinline__ Smem carve(float* base, u32 max_x, u32 max_a, u32 max_z, u32 max_y) {
    Smem m;
    m.xn = base;
    m.a = m.xn + max_x;
    m.z = m.a + max_a;
    m.u = m.z + max_z;
    m.y = m.u + max_z;
    (void)max_y;
    return m;
}

// Fused tick: grid (n targets, frames); block (t threads). Frame f uses masks[f] when masks is not
// null, else `mask`. Active targets copy their slice of the row; the others are predicted.
// sizes = {max_x, max_a, max_z, max_y}: the largest per-target shared-memory needs.
template <typename W>
__device__ void links_fused(const W* lp, const W* ep, const u32* models, const u32* links, u32 n,
                            u32 stride, u64 mask, const u64* masks, const float* rows, float* out,
                            u32 max_x, u32 max_a, u32 max_z, u32 max_y) {
    __shared__ Plan plan;
    const u32 j = blockIdx.x, f = blockIdx.y;
    const u64 active = masks ? masks[f] : mask;
    const float* row = rows + (size_t)f * stride;
    float* dst = out + (size_t)f * stride + models[4u * j];
    const u32 nout = models[4u * j + 1];
    if (active >> j & 1ull) {
        for (u32 o = threadIdx.x; o < nout; o += blockDim.x) dst[o] = row[models[4u * j] + o];
        return;
    }
    if (threadIdx.x == 0) make_plan(plan, links, j, n - 1, compress_mask(active, j));
    __syncthreads();
    Smem m = carve(smem, max_x, max_a, max_z, max_y);
    links_into(plan, lp, models, links, j, row, m.xn, m.a, m.z);
    ensemble_into(plan, ep, models, j, m.z, m.u, m.y, dst);
}

extern "C" __global__ void links_fused_f32(const float* __restrict__ lp, const float* __restrict__ ep,
                                           const u32* __restrict__ models, const u32* __restrict__ links,
                                           u32 n, u32 stride, u64 mask, const u64* __restrict__ masks,
                                           const float* __restrict__ rows, float* __restrict__ out,
                                           u32 max_x, u32 max_a, u32 max_z, u32 max_y) {
    links_fused(lp, ep, models, links, n, stride, mask, masks, rows, out, max_x, max_a, max_z, max_y);
}

extern "C" __global__ void links_fused_f16(const unsigned short* __restrict__ lp,
                                           const unsigned short* __restrict__ ep,
                                           const u32* __restrict__ models, const u32* __restrict__ links,
                                           u32 n, u32 stride, u64 mask, const u64* __restrict__ masks,
                                           const float* __restrict__ rows, float* __restrict__ out,
                                           u32 max_x, u32 max_a, u32 max_z, u32 max_y) {
    links_fused(lp, ep, models, links, n, stride, mask, masks, rows, out, max_x, max_a, max_z, max_y);
}

// Unfused baseline, one launch per link: link `slot` into target j for one frame, pre-activation
// output to zbuf[zoff + slot·out .. + out). One block.
extern "C" __global__ void link_one_f32(const float* __restrict__ lp, const u32* __restrict__ models,
                                        const u32* __restrict__ links, u32 n, u32 j, u32 slot,
                                        const float* __restrict__ row, float* __restrict__ zbuf, u32 zoff,
                                        u32 max_x, u32 max_a) {
    __shared__ Plan plan;
    if (threadIdx.x == 0) make_plan(plan, links, j, n - 1, 1ull << slot);
    __syncthreads();
    links_into(plan, lp, models, links, j, row, smem, smem + max_x, zbuf + zoff);
}

// Unfused baseline: ensemble and activation of target j from zbuf (written by link_one_f32) for
// model mask `active`, into out (a full row). One block.
extern "C" __global__ void ensemble_one_f32(const float* __restrict__ ep, const u32* __restrict__ models,
                                            const u32* __restrict__ links, u32 n, u32 j, u64 active,
                                            const float* __restrict__ zbuf, u32 zoff, float* __restrict__ out,
                                            u32 max_z) {
    __shared__ Plan plan;
    if (threadIdx.x == 0) make_plan(plan, links, j, n - 1, compress_mask(active, j));
    __syncthreads();
    ensemble_into(plan, ep, models, j, zbuf + zoff, smem, smem + max_z, out + models[4u * j]);
}

// The launch floor: does nothing.
extern "C" __global__ void empty_kernel() {}
