#include "quest_backend.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "fluxattn/attention/layout_builder.h"
#include "fluxattn/attention/parallel_for.h"
#include "fluxattn/attention/param_reader.h"
#include "fluxattn/device.h"
#include "fluxattn/status.h"
#if defined(FLUXATTN_WITH_CUDA)
#include "fluxattn/kernels/cuda_quest.h"
#endif

namespace fluxattn::plugins {

// The CUDA kernels' key tile: layouts on a GPU list keys in blocks of this many.
constexpr int kCudaKeyTile = 64;

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__SANITIZE_ADDRESS__)
// Compiled for baseline x86-64, AVX2+FMA and AVX-512; the loader picks the best the CPU runs.
#define FLUXATTN_QUEST_MULTIVERSION \
  __attribute__((target_clones("default", "arch=x86-64-v3", "arch=x86-64-v4")))
#else
#define FLUXATTN_QUEST_MULTIVERSION
#endif

namespace {

// A page's Quest bound for one query: sum_i max(q_i lo_i, q_i hi_i), in 16 partial lanes over i
// then a fixed tree (vectorizes; the order never depends on the caller).
FLUXATTN_QUEST_MULTIVERSION
float PageBound(const float* __restrict q, const float* __restrict lo, const float* __restrict hi,
                int d) {
  float lane[16] = {};
  int i = 0;
  for (; i + 16 <= d; i += 16) {
    for (int l = 0; l < 16; ++l) lane[l] += std::max(q[i + l] * lo[i + l], q[i + l] * hi[i + l]);
  }
  for (int l = 0; i + l < d; ++l) lane[l] += std::max(q[i + l] * lo[i + l], q[i + l] * hi[i + l]);
  for (int w = 8; w >= 1; w /= 2) {
    for (int l = 0; l < w; ++l) lane[l] += lane[l + w];
  }
  return lane[0];
}

}  // namespace

// The bounds of a CUDA problem's request on its device: [capacity pages][head][dim] f32 each,
// grown by copying, plus scratch for the page table and the scores.
struct QuestState::Device {
  fluxattn::Device* device = nullptr;
  float* lo = nullptr;
  float* hi = nullptr;
  int64_t capacity_pages = 0;
  int64_t covered = 0;
  DeviceBuffer table, scores, keep;
  ~Device() {
    if (device != nullptr) {
      device->Free(lo);
      device->Free(hi);
    }
  }
};

QuestState::QuestState(int num_kv_heads, int head_dim, int page_size)
    : num_kv_heads_(num_kv_heads), head_dim_(head_dim), page_size_(page_size) {}

QuestState::~QuestState() = default;

absl::Status QuestState::DevicePages(const AttentionProblem& p, const QuestConfig& config,
                                     std::vector<uint32_t>* keep) {
#if defined(FLUXATTN_WITH_CUDA)
  if (device_ == nullptr) {
    auto made = std::make_unique<Device>();
    FLUXATTN_ASSIGN_OR_RETURN(made->device, CudaDevice(p.q.ordinal));
    made->table.Bind(made->device);
    made->scores.Bind(made->device);
    made->keep.Bind(made->device);
    device_ = std::move(made);
  }
  Device& D = *device_;
  const KvView& kv = p.kv;
  const int64_t pages = (kv.length + page_size_ - 1) / page_size_;
  // The keys in the pool: every position before the step's first query.
  const int64_t begin = D.covered, end = p.q_pos0;
  if (end < begin || end > kv.length) {
    return absl::FailedPreconditionError(
        absl::StrCat("quest: expected the KV to grow, found the keys up to ", end, " after ", begin,
                     " (length ", kv.length, ")"));
  }
  for (int64_t i = 0; i * kv.page_tokens < end; ++i) {
    if (i >= kv.num_pages || kv.pages[i] < 0) {
      return absl::FailedPreconditionError(absl::StrCat("quest: expected KV position ",
                                                        i * kv.page_tokens,
                                                        " to be resident, found it released"));
    }
  }
  fluxattn::Device* dev = D.device;
  Stream* stream = dev->default_stream();
  const size_t page_floats = static_cast<size_t>(num_kv_heads_) * head_dim_;
  if (pages > D.capacity_pages) {
    const int64_t capacity = std::max<int64_t>(pages, 2 * D.capacity_pages);
    FLUXATTN_ASSIGN_OR_RETURN(void* lo, dev->Allocate(capacity * page_floats * sizeof(float)));
    FLUXATTN_ASSIGN_OR_RETURN(void* hi, dev->Allocate(capacity * page_floats * sizeof(float)));
    if (D.capacity_pages > 0) {
      const size_t old_bytes = D.capacity_pages * page_floats * sizeof(float);
      FLUXATTN_RETURN_IF_ERROR(dev->Copy(lo, D.lo, old_bytes, CopyKind::kDeviceToDevice, stream));
      FLUXATTN_RETURN_IF_ERROR(dev->Copy(hi, D.hi, old_bytes, CopyKind::kDeviceToDevice, stream));
      FLUXATTN_RETURN_IF_ERROR(stream->Synchronize());
      dev->Free(D.lo);
      dev->Free(D.hi);
    }
    D.lo = static_cast<float*>(lo);
    D.hi = static_cast<float*>(hi);
    D.capacity_pages = capacity;
  }
  void* cu = stream->native_handle();
  if (end > begin) {
    FLUXATTN_ASSIGN_OR_RETURN(void* table, D.table.Ensure(kv.num_pages * sizeof(int32_t)));
    FLUXATTN_RETURN_IF_ERROR(dev->Copy(table, kv.pages, kv.num_pages * sizeof(int32_t),
                                       CopyKind::kHostToDevice, stream));
    FLUXATTN_RETURN_IF_ERROR(kernels::cuda::QuestFoldKeys(
        kv.k_pool, kv.page_tokens, kv.head_dim, static_cast<const int32_t*>(table), num_kv_heads_,
        head_dim_, page_size_, begin, end, D.lo, D.hi, cu));
    D.covered = end;
  }
  const size_t score_bytes = pages * num_kv_heads_ * sizeof(float);
  FLUXATTN_ASSIGN_OR_RETURN(void* out, D.scores.Ensure(score_bytes));
  FLUXATTN_RETURN_IF_ERROR(
      kernels::cuda::QuestPageScores(p.q.data, p.num_q_heads, num_kv_heads_, head_dim_, D.lo, D.hi,
                                     static_cast<int32_t>(pages), static_cast<float*>(out), cu));
  const int64_t words = (pages + 31) / 32;
  const size_t keep_bytes = num_kv_heads_ * words * sizeof(uint32_t);
  FLUXATTN_ASSIGN_OR_RETURN(void* bits, D.keep.Ensure(keep_bytes));
  FLUXATTN_RETURN_IF_ERROR(kernels::cuda::QuestTopPages(
      static_cast<const float*>(out), num_kv_heads_, static_cast<int32_t>(pages), config.sink_pages,
      config.recent_pages, config.budget_pages(), static_cast<uint32_t*>(bits), cu));
  keep->resize(num_kv_heads_ * words);
  FLUXATTN_RETURN_IF_ERROR(
      dev->Copy(keep->data(), bits, keep_bytes, CopyKind::kDeviceToHost, stream));
  return stream->Synchronize();
#else
  (void)p;
  (void)config;
  (void)keep;
  return absl::UnimplementedError("quest on cuda: this build has no CUDA");
#endif
}

absl::Status QuestState::Update(const KvView& kv) {
  if (kv.length < covered_) {
    return absl::FailedPreconditionError(absl::StrCat(
        "quest: expected the KV to grow, found length ", kv.length, " after ", covered_));
  }
  const int64_t pages = (kv.length + page_size_ - 1) / page_size_;
  const size_t size = static_cast<size_t>(pages) * num_kv_heads_ * head_dim_;
  min_.resize(size, std::numeric_limits<float>::infinity());
  max_.resize(size, -std::numeric_limits<float>::infinity());
  for (int64_t pos = covered_; pos < kv.length; ++pos) {
    const int64_t page = pos / page_size_;
    for (int h = 0; h < num_kv_heads_; ++h) {
      const float* key = kv.key(pos, h);
      if (key == nullptr) {
        return absl::FailedPreconditionError(absl::StrCat("quest: expected KV position ", pos,
                                                          " to be resident, found it released"));
      }
      float* lo = &min_[(page * num_kv_heads_ + h) * head_dim_];
      float* hi = &max_[(page * num_kv_heads_ + h) * head_dim_];
      for (int d = 0; d < head_dim_; ++d) {
        lo[d] = std::min(lo[d], key[d]);
        hi[d] = std::max(hi[d], key[d]);
      }
    }
  }
  covered_ = kv.length;
  return absl::OkStatus();
}

std::vector<ParamSpec> QuestBackend::Params() {
  std::vector<ParamSpec> specs;
  specs.push_back(IntParamSpec("page_size", 16, 1, 4096, "Tokens per selection page."));
  specs.push_back(IntParamSpec("budget_tokens", 2048, 1, 1e9,
                               "Tokens read per decode step (rounded up to whole pages), sink and "
                               "recent pages included."));
  specs.push_back(IntParamSpec("sink_pages", 1, 0, 1 << 20, "First pages always read."));
  specs.push_back(IntParamSpec("recent_pages", 1, 1, 1 << 20,
                               "Last pages (the query's own included) always read."));
  return specs;
}

absl::StatusOr<std::unique_ptr<QuestBackend>> QuestBackend::Create(const ParamValues& params) {
  QuestConfig config;
  FLUXATTN_ASSIGN_OR_RETURN(int64_t page, ReadParam<int64_t>(params, "page_size"));
  FLUXATTN_ASSIGN_OR_RETURN(config.budget_tokens, ReadParam<int64_t>(params, "budget_tokens"));
  FLUXATTN_ASSIGN_OR_RETURN(int64_t sinks, ReadParam<int64_t>(params, "sink_pages"));
  FLUXATTN_ASSIGN_OR_RETURN(int64_t recent, ReadParam<int64_t>(params, "recent_pages"));
  if (page < 1 || page > 4096) {
    return absl::InvalidArgumentError(
        absl::StrCat("page_size: expected an integer in [1, 4096], found ", page));
  }
  if (sinks < 0 || sinks > (1 << 20) || recent < 1 || recent > (1 << 20)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "sink_pages/recent_pages: expected >= 0 and >= 1, found ", sinks, " and ", recent));
  }
  config.page_size = static_cast<int>(page);
  config.sink_pages = static_cast<int>(sinks);
  config.recent_pages = static_cast<int>(recent);
  if (config.budget_tokens < 1 || config.budget_pages() < sinks + recent) {
    return absl::InvalidArgumentError(
        absl::StrCat("budget_tokens: expected at least (sink_pages + recent_pages) * page_size = ",
                     (sinks + recent) * page, " tokens, found ", config.budget_tokens));
  }
  return std::make_unique<QuestBackend>(config);
}

AttentionCapabilities QuestBackend::capabilities() const {
  AttentionCapabilities caps;
  caps.devices = {DeviceType::kCpu, DeviceType::kCuda};
  caps.dtypes = {DType::kF32, DType::kBF16};
  caps.data_dependent_layout = true;
  return caps;
}

absl::Status QuestBackend::Supports(const ProblemDesc& problem) const {
  FLUXATTN_RETURN_IF_ERROR(AttentionBackend::Supports(problem));
  if (problem.device == DeviceType::kCpu && problem.dtype != DType::kF32) {
    return absl::UnimplementedError(
        absl::StrCat("on the cpu it runs f32, not ", DTypeName(problem.dtype)));
  }
  if (problem.device == DeviceType::kCuda) {
    if (!CudaCompiledIn()) return absl::UnimplementedError("this build has no CUDA");
    if (problem.dtype != DType::kBF16) {
      return absl::UnimplementedError(
          absl::StrCat("on cuda it scores bf16 KV pools, not ", DTypeName(problem.dtype)));
    }
    if (config_.page_size % kCudaKeyTile != 0 && kCudaKeyTile % config_.page_size != 0) {
      return absl::UnimplementedError(
          absl::StrCat("on cuda page_size must divide or be a multiple of ", kCudaKeyTile,
                       " (the kernels' key tile), found ", config_.page_size));
    }
  }
  return absl::OkStatus();
}

std::unique_ptr<AttentionState> QuestBackend::CreateState(int /*num_q_heads*/, int num_kv_heads,
                                                          int head_dim) const {
  return std::make_unique<QuestState>(num_kv_heads, head_dim, config_.page_size);
}

absl::Status QuestBackend::BuildLayout(const AttentionProblem& problem, BlockSparseLayout* layout) {
  // Bounds come from the request's state when the engine keeps one, else from scratch.
  QuestState* state = dynamic_cast<QuestState*>(problem.state);
  std::unique_ptr<QuestState> scratch;
  if (state == nullptr || !state->Matches(problem.num_kv_heads, problem.head_dim)) {
    if (problem.phase == AttentionPhase::kDecode) {
      scratch =
          std::make_unique<QuestState>(problem.num_kv_heads, problem.head_dim, config_.page_size);
      state = scratch.get();
    }
  }
  // On a GPU the keys are folded on the device when a decode step needs the scores.
  if (state != nullptr && problem.device != DeviceType::kCuda) {
    FLUXATTN_RETURN_IF_ERROR(state->Update(problem.kv));
  }
  if (problem.phase == AttentionPhase::kDecode) return BuildDecodeLayout(problem, *state, layout);
  *layout = DenseCausalLayout(problem.q_pos0, problem.num_queries, problem.kv.length);
  return absl::OkStatus();
}

absl::Status QuestBackend::BuildDecodeLayout(const AttentionProblem& p, QuestState& state,
                                             BlockSparseLayout* layout) const {
  const int page = config_.page_size;
  const int64_t len = p.kv.length;
  const int64_t pages = (len + page - 1) / page;
  const int heads = p.num_kv_heads;
  const int group = p.num_q_heads / p.num_kv_heads;
  const int d = p.head_dim;
  const int q_block = static_cast<int>(std::max<int64_t>(1, p.num_queries));
  if (pages <= config_.budget_pages() || p.num_queries == 0) {
    // Everything fits the budget: exactly what `full` does.
    *layout = DenseCausalLayout(p.q_pos0, p.num_queries, len);
    return absl::OkStatus();
  }
  // On a GPU the bounds and the choice are computed there (a bit per page comes back); on the
  // CPU here.
  const bool cuda = p.device == DeviceType::kCuda;
  std::vector<std::vector<int32_t>> selected(heads);
  if (cuda) {
    std::vector<uint32_t> keep;
    FLUXATTN_RETURN_IF_ERROR(state.DevicePages(p, config_, &keep));
    const int64_t words = (pages + 31) / 32;
    for (int h = 0; h < heads; ++h) {
      LayoutBuilder::AppendSetBits(&keep[h * words], words, &selected[h]);
    }
  } else {
    auto page_bound = [&](int64_t b, int h) {
      const float* lo = state.min_key(b, h);
      const float* hi = state.max_key(b, h);
      float best = -std::numeric_limits<float>::infinity();
      for (int64_t r = 0; r < p.num_queries; ++r) {
        for (int g = 0; g < group; ++g) {
          const float* q =
              p.host_q() + (r * p.num_q_heads + h * group + g) * static_cast<int64_t>(d);
          best = std::max(best, PageBound(q, lo, hi, d));
        }
      }
      return best;
    };
    ParallelFor(heads, [&](int64_t h) {
      std::vector<int32_t>& keep = selected[h];
      const int64_t sink_end = std::min<int64_t>(config_.sink_pages, pages);
      const int64_t recent_begin = std::max<int64_t>(sink_end, pages - config_.recent_pages);
      std::vector<std::pair<float, int32_t>> bounds;
      for (int64_t b = sink_end; b < recent_begin; ++b) {
        bounds.emplace_back(page_bound(b, static_cast<int>(h)), static_cast<int32_t>(b));
      }
      const int64_t free_pages = config_.budget_pages() - sink_end - (pages - recent_begin);
      const int64_t take = std::clamp<int64_t>(free_pages, 0, static_cast<int64_t>(bounds.size()));
      // Highest bounds first; ties broken by position so the choice is deterministic.
      std::partial_sort(bounds.begin(), bounds.begin() + take, bounds.end(),
                        [](const auto& x, const auto& y) {
                          return x.first > y.first || (x.first == y.first && x.second < y.second);
                        });
      for (int64_t b = 0; b < sink_end; ++b) keep.push_back(static_cast<int32_t>(b));
      for (int64_t i = 0; i < take; ++i) keep.push_back(bounds[i].second);
      for (int64_t b = recent_begin; b < pages; ++b) keep.push_back(static_cast<int32_t>(b));
      std::sort(keep.begin(), keep.end());
    });
  }
  if (cuda && page < kCudaKeyTile) {
    // The CUDA kernels read keys in tiles of 64: pages smaller than a tile become the bits of
    // the decode row (row 0 of its 64-row query block) in the tiles' masks.
    const int per_tile = kCudaKeyTile / page;
    LayoutBuilder builder(kCudaKeyTile, kCudaKeyTile, p.q_pos0, p.num_queries, len, heads);
    for (int h = 0; h < heads; ++h) {
      builder.StartRow();
      const std::vector<int32_t>& keep = selected[h];
      for (size_t i = 0; i < keep.size();) {
        const int32_t tile = keep[i] / per_tile;
        size_t j = i;
        while (j < keep.size() && keep[j] / per_tile == tile) ++j;
        // Pages of this tile that exist (the last tile may be short).
        const int64_t tile_pages =
            std::min<int64_t>(per_tile, pages - static_cast<int64_t>(tile) * per_tile);
        if (static_cast<int64_t>(j - i) == tile_pages) {
          builder.AddBlock(tile);
        } else {
          uint64_t* mask = builder.AddMaskedBlock(tile);
          for (size_t t = i; t < j; ++t) {
            const int first = (keep[t] - tile * per_tile) * page;
            for (int k = first; k < first + page; ++k) {
              LayoutBuilder::SetMaskBit(mask, kCudaKeyTile, 0, k);
            }
          }
        }
        i = j;
      }
    }
    FLUXATTN_ASSIGN_OR_RETURN(*layout, builder.Build());
    return absl::OkStatus();
  }
  // The CUDA kernels take query blocks of 64 rows (the decode row is row 0 of its block).
  LayoutBuilder builder(cuda ? kCudaKeyTile : q_block, page, p.q_pos0, p.num_queries, len, heads);
  for (int h = 0; h < heads; ++h) {
    builder.StartRow();
    for (int32_t b : selected[h]) builder.AddBlock(b);
  }
  FLUXATTN_ASSIGN_OR_RETURN(*layout, builder.Build());
  return absl::OkStatus();
}

}  // namespace fluxattn::plugins
