// `dilated_window`: an attention backend built outside the FluxAttn tree. A query at position p
// reads key j <= p when j is a sink (j < sink_tokens), lies in the local window
// (p - j < window_tokens), or lies in the dilated span (p - j < span_tokens) on a multiple of
// `stride`. Like every bundled strategy it only builds a block-sparse layout; the core kernel
// runs it.
#include <algorithm>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "fluxattn/attention/layout_builder.h"
#include "fluxattn/attention/param_reader.h"
#include "fluxattn/attention_backend.h"
#include "fluxattn/plugin_abi.h"
#include "fluxattn/status.h"

namespace dilated {

using fluxattn::ParamSpec;

// An integer parameter: name, description, default and inclusive range.
ParamSpec Int(const char* name, const char* description, int64_t value, double min,
              double max = 1e9) {
  return {name, fluxattn::ParamType::kInt, description, value, min, max, {}};
}

class DilatedWindowBackend : public fluxattn::AttentionBackend {
 public:
  static std::vector<ParamSpec> Params() {
    return {
        Int("sink_tokens", "Keys below this position are always read.", 4, 0),
        Int("window_tokens", "Every key of the last window_tokens positions is read.", 256, 1),
        Int("span_tokens",
            "Beyond the window, keys of the last span_tokens positions on a multiple of `stride` "
            "are read; must be >= window_tokens.",
            4096, 1),
        Int("stride", "Distance between the dilated keys.", 8, 1, 65536),
    };
  }

  static absl::StatusOr<std::unique_ptr<DilatedWindowBackend>> Create(
      const fluxattn::ParamValues& params) {
    auto backend = std::make_unique<DilatedWindowBackend>();
    // ReadParam returns an error (not an abort) for instances built in code with bad values.
    for (auto [name, field] : {std::pair{"sink_tokens", &backend->sink_},
                               {"window_tokens", &backend->window_},
                               {"span_tokens", &backend->span_},
                               {"stride", &backend->stride_}}) {
      absl::StatusOr<int64_t> value = fluxattn::ReadParam<int64_t>(params, name);
      if (!value.ok()) return value.status();
      *field = *value;
    }
    // The core checked each range; how the parameters relate is this plugin's to check.
    if (backend->window_ < 1 || backend->stride_ < 1) {
      return absl::InvalidArgumentError("window_tokens, stride: expected >= 1, found less");
    }
    if (backend->span_ < backend->window_) {
      return absl::InvalidArgumentError(absl::StrCat("span_tokens: expected >= window_tokens (",
                                                     backend->window_, "), found ",
                                                     backend->span_));
    }
    return backend;
  }

  fluxattn::AttentionCapabilities capabilities() const override { return {}; }

  // Queries at p >= next read nothing older than next - span + 1 except the sinks.
  fluxattn::KvRetention RetainedKv(int64_t next) const override {
    return {sink_, std::max<int64_t>(0, next - span_ + 1)};
  }

  absl::Status BuildLayout(const fluxattn::AttentionProblem& problem,
                           fluxattn::BlockSparseLayout* layout) override {
    constexpr int kTile = 64;
    const int64_t end = problem.q_pos0 + problem.num_queries;  // one past the last query
    fluxattn::LayoutBuilder builder(kTile, kTile, problem.q_pos0, problem.num_queries,
                                    problem.kv.length, /*num_layout_heads=*/1);
    const int64_t sink_tiles = (sink_ + kTile - 1) / kTile;
    for (int64_t p0 = problem.q_pos0; p0 < end; p0 += kTile) {
      const int64_t p1 = std::min(p0 + kTile, end) - 1;  // last query of this query tile
      const int64_t last_tile = std::min(p1, problem.kv.length - 1) / kTile;
      const int64_t first_span_tile = std::max<int64_t>(0, p0 - span_ + 1) / kTile;
      builder.StartRow();
      for (int64_t kt = 0; kt <= last_tile; ++kt) {
        if (kt >= sink_tiles && kt < first_span_tile) kt = first_span_tile;  // never read
        AddTile(builder, p0, p1, kt * kTile, kTile);
      }
    }
    FLUXATTN_ASSIGN_OR_RETURN(*layout, builder.Build());
    return absl::OkStatus();
  }

 private:
  bool Reads(int64_t p, int64_t j) const {
    return j <= p && (j < sink_ || p - j < window_ || (p - j < span_ && j % stride_ == 0));
  }

  // Adds keys [k0, k0 + tile) for queries [p0, p1]: whole when every causal pair is read, with
  // an element mask when some are, not at all when none are.
  void AddTile(fluxattn::LayoutBuilder& builder, int64_t p0, int64_t p1, int64_t k0,
               int tile) const {
    int64_t causal = 0, read = 0;
    for (int64_t p = p0; p <= p1; ++p) {
      for (int64_t j = k0; j < k0 + tile && j <= p; ++j) {
        ++causal;
        read += Reads(p, j);
      }
    }
    const auto kv_tile = static_cast<int32_t>(k0 / tile);
    if (read == 0) return;
    if (read == causal) {
      builder.AddBlock(kv_tile);
      return;
    }
    uint64_t* mask = builder.AddMaskedBlock(kv_tile);
    for (int64_t p = p0; p <= p1; ++p) {
      for (int64_t j = k0; j < k0 + tile && j <= p; ++j) {
        if (Reads(p, j)) {
          fluxattn::LayoutBuilder::SetMaskBit(mask, tile, static_cast<int>(p - p0),
                                              static_cast<int>(j - k0));
        }
      }
    }
  }

  int64_t sink_ = 0, window_ = 1, span_ = 1, stride_ = 1;
};

}  // namespace dilated

FLUXATTN_DEFINE_ATTENTION_PLUGIN(dilated::DilatedWindowBackend, "dilated_window", "0.1.0",
                                 "Sinks + local window + every stride-th key of a longer span")
