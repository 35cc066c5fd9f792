// Sampling on the device: one CTA of 1024 threads per request. Greedy is an argmax (lowest id
// among equal maxima; NaN counts as -inf). Otherwise the top-k and top-p edges are found by
// radix selection over the order-preserving integer keys of the logits (4 passes of 8 bits,
// counts for top-k, f32 probability mass for top-p), and the token is the first one, in id order,
// whose running sum of kept weights exceeds u times the kept total: each thread owns one
// contiguous slice of ids, so the sums (in double) do not depend on timing.
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda_check.cuh"
#include "fluxattn/kernels/cuda_model_ops.h"

namespace fluxattn::kernels::cuda {
namespace {

constexpr int kSampleThreads = 1024;

__device__ __forceinline__ uint32_t OrderKey(float v) {
  if (v != v) return 0;  // NaN: below everything
  const uint32_t bits = __float_as_uint(v);
  return (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
}

// Radix-selects the key edge: the largest key value t such that the weight (count or mass) of
// kept keys >= t reaches `target`. `weight(i)` is the weight of id i (0 = not a candidate).
template <typename W, typename Fn>
__device__ uint32_t SelectEdge(const float* row, int32_t vocab, uint32_t floor_key, W target,
                               Fn weight, W* hist, uint32_t* shared_prefix, W* shared_above) {
  uint32_t prefix = 0, prefix_mask = 0;
  W above = 0;
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int i = threadIdx.x; i < 256; i += blockDim.x) hist[i] = 0;
    __syncthreads();
    for (int32_t i = threadIdx.x; i < vocab; i += blockDim.x) {
      const uint32_t key = OrderKey(row[i]);
      if (key < floor_key || (key & prefix_mask) != prefix) continue;
      const W w = weight(i);
      if (w > 0) atomicAdd(&hist[(key >> shift) & 255], w);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      W cum = above;
      int chosen = -1, lowest = -1;
      for (int bin = 255; bin >= 0; --bin) {
        if (hist[bin] > 0) lowest = bin;
        if (hist[bin] > 0 && cum + hist[bin] >= target) {
          chosen = bin;
          break;
        }
        cum += hist[bin];
      }
      if (chosen < 0) {  // rounding left the target out of reach: keep everything left
        chosen = lowest < 0 ? 0 : lowest;
        cum -= chosen >= 0 && lowest >= 0 ? hist[chosen] : 0;
      }
      *shared_prefix = prefix | (static_cast<uint32_t>(chosen) << shift);
      *shared_above = cum;
    }
    __syncthreads();
    prefix = *shared_prefix;
    above = *shared_above;
    prefix_mask |= 255u << shift;
    __syncthreads();
  }
  return prefix;
}

__global__ void __launch_bounds__(kSampleThreads)
    SampleKernel(const float* logits, int32_t vocab, const SamplingParams* params,
                 int32_t* tokens) {
  __shared__ float s_best[32];
  __shared__ int32_t s_idx[32];
  __shared__ float s_fhist[256];
  __shared__ int32_t s_ihist[256];
  __shared__ uint32_t s_prefix;
  __shared__ float s_fabove;
  __shared__ int32_t s_iabove;
  __shared__ double s_scan[kSampleThreads];
  __shared__ int32_t s_token;
  __shared__ int32_t s_last_kept;

  const int b = blockIdx.x;
  const float* row = logits + static_cast<int64_t>(b) * vocab;
  const SamplingParams sp = params[b];
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;

  // Argmax, lowest id on ties.
  float best = -INFINITY;
  int32_t idx = INT32_MAX;
  for (int32_t i = tid; i < vocab; i += kSampleThreads) {
    const float v = row[i];
    if (v > best || (idx == INT32_MAX && v == best)) {
      best = v;
      idx = i;
    }
  }
  for (int off = 16; off > 0; off /= 2) {
    const float ob = __shfl_xor_sync(0xffffffff, best, off);
    const int32_t oi = __shfl_xor_sync(0xffffffff, idx, off);
    if (ob > best || (ob == best && oi < idx)) {
      best = ob;
      idx = oi;
    }
  }
  if (lane == 0) {
    s_best[warp] = best;
    s_idx[warp] = idx;
  }
  __syncthreads();
  if (warp == 0) {
    best = s_best[lane];
    idx = s_idx[lane];
    for (int off = 16; off > 0; off /= 2) {
      const float ob = __shfl_xor_sync(0xffffffff, best, off);
      const int32_t oi = __shfl_xor_sync(0xffffffff, idx, off);
      if (ob > best || (ob == best && oi < idx)) {
        best = ob;
        idx = oi;
      }
    }
    if (lane == 0) {
      s_best[0] = best;
      s_idx[0] = idx == INT32_MAX ? 0 : idx;
    }
  }
  __syncthreads();
  best = s_best[0];
  const int32_t argmax = s_idx[0];
  if (!(sp.temperature > 0.f) || sp.top_k == 1 || best == -INFINITY) {
    if (tid == 0) tokens[b] = argmax;
    return;
  }
  const float inv_t = 1.f / sp.temperature;
  auto weight = [&](int32_t i) -> double {
    const float v = row[i];
    if (!(v > -INFINITY)) return 0.0;  // -inf and NaN
    return static_cast<double>(expf((v - best) * inv_t));
  };

  uint32_t floor_key = 0;
  if (sp.top_k > 0 && sp.top_k < vocab) {
    floor_key = SelectEdge<int32_t>(
        row, vocab, 0u, sp.top_k, [&](int32_t i) { return row[i] == row[i] ? 1 : 0; }, s_ihist,
        &s_prefix, &s_iabove);
  }
  if (sp.top_p < 1.f) {
    // Kept mass so far.
    double mass = 0.0;
    for (int32_t i = tid; i < vocab; i += kSampleThreads) {
      if (OrderKey(row[i]) >= floor_key) mass += weight(i);
    }
    s_scan[tid] = mass;
    __syncthreads();
    for (int stride = kSampleThreads / 2; stride > 0; stride /= 2) {
      if (tid < stride) s_scan[tid] += s_scan[tid + stride];
      __syncthreads();
    }
    // Mass histograms in f32 (native shared-memory atomics); the edge is exact up to f32
    // rounding of the bin masses, the draw below sums in double.
    const float target = static_cast<float>(static_cast<double>(sp.top_p) * s_scan[0]);
    __syncthreads();
    const uint32_t edge = SelectEdge<float>(
        row, vocab, floor_key, target, [&](int32_t i) { return static_cast<float>(weight(i)); },
        s_fhist, &s_prefix, &s_fabove);
    floor_key = max(floor_key, edge);
  }

  // Draw: contiguous slices, exclusive scan of slice sums, then one thread walks its slice.
  const int32_t slice = (vocab + kSampleThreads - 1) / kSampleThreads;
  const int32_t lo = min(vocab, tid * slice), hi = min(vocab, lo + slice);
  double local = 0.0;
  int32_t last_kept = -1;
  for (int32_t i = lo; i < hi; ++i) {
    if (OrderKey(row[i]) >= floor_key) {
      const double w = weight(i);
      if (w > 0.0) {
        local += w;
        last_kept = i;
      }
    }
  }
  if (tid == 0) {
    s_token = -1;
    s_last_kept = -1;
  }
  s_scan[tid] = local;
  __syncthreads();
  if (last_kept >= 0) atomicMax(&s_last_kept, last_kept);
  // Inclusive Hillis-Steele scan (1024 entries).
  for (int stride = 1; stride < kSampleThreads; stride *= 2) {
    const double add = tid >= stride ? s_scan[tid - stride] : 0.0;
    __syncthreads();
    s_scan[tid] += add;
    __syncthreads();
  }
  const double total = s_scan[kSampleThreads - 1];
  const double target = SamplingUniform(sp.seed, sp.step) * total;
  const double before = s_scan[tid] - local;
  if (local > 0.0 && before <= target && target < s_scan[tid]) {
    double run = before;
    for (int32_t i = lo; i < hi; ++i) {
      if (OrderKey(row[i]) < floor_key) continue;
      run += weight(i);
      if (run > target) {
        s_token = i;
        break;
      }
    }
  }
  __syncthreads();
  if (tid == 0) {
    int32_t t = s_token;
    if (t < 0) t = s_last_kept >= 0 ? s_last_kept : argmax;
    tokens[b] = t;
  }
}

}  // namespace

absl::Status Sample(const float* logits, int32_t num_seqs, int32_t vocab,
                    const SamplingParams* params, int32_t* tokens, void* stream) {
  if (num_seqs < 0 || vocab <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Sample: num_seqs / vocab: expected >= 0 / > 0, found ", num_seqs, " / ", vocab));
  }
  if (num_seqs == 0) return absl::OkStatus();
  SampleKernel<<<num_seqs, kSampleThreads, 0, AsStream(stream)>>>(logits, vocab, params, tokens);
  return LaunchStatus("Sample");
}

}  // namespace fluxattn::kernels::cuda
