#include "fluxattn/models/decoder_model.h"

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>

#include "absl/strings/str_cat.h"
#include "fluxattn/models/safetensors.h"
#include "fluxattn/status.h"
#include "thread_pool.h"

namespace fluxattn::models {
namespace {

using RowMatrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using ConstMatrixMap = Eigen::Map<const RowMatrix>;
using StridedMatrixMap = Eigen::Map<RowMatrix, 0, Eigen::OuterStride<>>;

std::string LayerName(int layer, const std::string& suffix) {
  return absl::StrCat("model.layers.", layer, ".", suffix);
}

// A dense linear map y = x W^T + b with W [out, in] row-major (the checkpoint layout).
struct Linear {
  std::vector<float> weight;
  std::vector<float> bias;  // empty: none
  int64_t in = 0;
  int64_t out = 0;
};

struct Layer {
  std::vector<float> input_norm;
  std::vector<float> post_norm;
  std::vector<float> q_norm;  // empty without per-head norms
  std::vector<float> k_norm;
  Linear qkv;  // q, k and v projections stacked along the output axis
  Linear o;
  Linear gate_up;  // gate and up projections stacked along the output axis
  Linear down;
};

std::vector<float> ToVector(const Tensor& t) {
  const float* p = t.data<float>();
  return std::vector<float>(p, p + t.numel());
}

class DecoderModel : public LanguageModel {
 public:
  DecoderModel(ModelSpec spec, std::unique_ptr<WeightSource> weights, int threads)
      : spec_(std::move(spec)), weights_(std::move(weights)) {
    SetThreads(threads);
    inv_freq_ = RopeInverseFrequencies(spec_.rope, spec_.info.head_dim);
  }

  absl::Status Load();

  const ModelInfo& info() const override { return spec_.info; }
  const WeightSource& weights() const override { return *weights_; }
  const std::vector<int64_t>& stop_token_ids() const override { return spec_.eos_token_ids; }
  void SetThreads(int threads) override {
    pool_ = std::make_unique<ThreadPool>(threads);
    threads_ = pool_->size();
  }
  int threads() const override { return threads_; }

  absl::Status Forward(std::span<const SequenceChunk> batch, LayerAttention& attention,
                       bool all_positions, std::vector<float>* logits) override;

 private:
  absl::StatusOr<std::vector<float>> Get(const std::string& name,
                                         const std::vector<int64_t>& shape) {
    FLUXATTN_ASSIGN_OR_RETURN(Tensor t, weights_->GetF32(name, shape));
    std::vector<float> values = ToVector(t);
    // One NaN or infinite weight turns every logit into NaN and greedy decoding then silently
    // returns token 0; a corrupt checkpoint is refused at load instead.
    for (size_t i = 0; i < values.size(); ++i) {
      if (!std::isfinite(values[i])) {
        return InvalidInput(
            absl::StrCat(spec_.info.path.empty() ? "weights" : spec_.info.path, ": tensor '", name,
                         "'"),
            "finite weights",
            absl::StrCat(std::isnan(values[i]) ? "NaN" : "an infinite value", " at element ", i));
      }
    }
    return values;
  }
  // Loads and stacks the given [rows_i, in] matrices (and their biases when `bias`).
  absl::StatusOr<Linear> LoadLinear(const std::vector<std::pair<std::string, int64_t>>& parts,
                                    int64_t in, bool bias);

  // y[n, out] = x[n, in] W^T + b, split over output features.
  void Apply(const Linear& lin, const float* x, int64_t n, float* y);
  void RmsNorm(const float* x, int64_t rows, int64_t dim, const std::vector<float>& w, float* y);
  void Rope(float* x, int64_t n, int heads, const std::vector<int64_t>& positions);

  ModelSpec spec_;
  std::unique_ptr<WeightSource> weights_;
  std::unique_ptr<ThreadPool> pool_;
  int threads_ = 1;
  std::vector<float> inv_freq_;
  std::vector<float> embed_;  // [vocab, hidden]
  std::vector<float> final_norm_;
  Linear lm_head_;  // shares nothing with embed_ (tied weights are copied once)
  std::vector<Layer> layers_;
};

absl::StatusOr<Linear> DecoderModel::LoadLinear(
    const std::vector<std::pair<std::string, int64_t>>& parts, int64_t in, bool bias) {
  Linear lin;
  lin.in = in;
  for (const auto& [prefix, rows] : parts) {
    FLUXATTN_ASSIGN_OR_RETURN(auto w, Get(prefix + ".weight", {rows, in}));
    lin.weight.insert(lin.weight.end(), w.begin(), w.end());
    if (bias) {
      FLUXATTN_ASSIGN_OR_RETURN(auto b, Get(prefix + ".bias", {rows}));
      lin.bias.insert(lin.bias.end(), b.begin(), b.end());
    }
    lin.out += rows;
  }
  return lin;
}

absl::Status DecoderModel::Load() {
  const ModelInfo& m = spec_.info;
  const int64_t h = m.hidden_size, d = m.head_dim, v = m.vocab_size;
  const int64_t inter = spec_.intermediate_size;
  const int64_t q_dim = int64_t{m.num_q_heads} * d, kv_dim = int64_t{m.num_kv_heads} * d;
  FLUXATTN_ASSIGN_OR_RETURN(embed_, Get("model.embed_tokens.weight", {v, h}));
  FLUXATTN_ASSIGN_OR_RETURN(final_norm_, Get("model.norm.weight", {h}));
  lm_head_.in = h;
  lm_head_.out = v;
  if (spec_.tie_word_embeddings) {
    lm_head_.weight = embed_;
  } else {
    FLUXATTN_ASSIGN_OR_RETURN(lm_head_.weight, Get("lm_head.weight", {v, h}));
  }
  layers_.resize(m.num_layers);
  for (int i = 0; i < m.num_layers; ++i) {
    Layer& L = layers_[i];
    FLUXATTN_ASSIGN_OR_RETURN(L.input_norm, Get(LayerName(i, "input_layernorm.weight"), {h}));
    FLUXATTN_ASSIGN_OR_RETURN(L.post_norm,
                              Get(LayerName(i, "post_attention_layernorm.weight"), {h}));
    if (spec_.qk_norm) {
      FLUXATTN_ASSIGN_OR_RETURN(L.q_norm, Get(LayerName(i, "self_attn.q_norm.weight"), {d}));
      FLUXATTN_ASSIGN_OR_RETURN(L.k_norm, Get(LayerName(i, "self_attn.k_norm.weight"), {d}));
    }
    FLUXATTN_ASSIGN_OR_RETURN(L.qkv, LoadLinear({{LayerName(i, "self_attn.q_proj"), q_dim},
                                                 {LayerName(i, "self_attn.k_proj"), kv_dim},
                                                 {LayerName(i, "self_attn.v_proj"), kv_dim}},
                                                h, spec_.qkv_bias));
    FLUXATTN_ASSIGN_OR_RETURN(
        L.o, LoadLinear({{LayerName(i, "self_attn.o_proj"), h}}, q_dim, spec_.o_bias));
    FLUXATTN_ASSIGN_OR_RETURN(L.gate_up, LoadLinear({{LayerName(i, "mlp.gate_proj"), inter},
                                                     {LayerName(i, "mlp.up_proj"), inter}},
                                                    h, spec_.mlp_bias));
    FLUXATTN_ASSIGN_OR_RETURN(
        L.down, LoadLinear({{LayerName(i, "mlp.down_proj"), h}}, inter, spec_.mlp_bias));
  }
  return absl::OkStatus();
}

void DecoderModel::Apply(const Linear& lin, const float* x, int64_t n, float* y) {
  ConstMatrixMap X(x, n, lin.in);
  pool_->ParallelFor(lin.out, 16, [&](int64_t begin, int64_t end) {
    const int64_t cols = end - begin;
    ConstMatrixMap W(lin.weight.data() + begin * lin.in, cols, lin.in);
    StridedMatrixMap Y(y + begin, n, cols, Eigen::OuterStride<>(lin.out));
    Y.noalias() = X * W.transpose();
    if (!lin.bias.empty()) {
      for (int64_t r = 0; r < n; ++r) {
        float* row = y + r * lin.out;
        for (int64_t c = begin; c < end; ++c) row[c] += lin.bias[c];
      }
    }
  });
}

void DecoderModel::RmsNorm(const float* x, int64_t rows, int64_t dim, const std::vector<float>& w,
                           float* y) {
  const float eps = static_cast<float>(spec_.rms_norm_eps);
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * dim;
    float* yr = y + r * dim;
    double sum = 0;
    for (int64_t i = 0; i < dim; ++i) sum += static_cast<double>(xr[i]) * xr[i];
    const float variance = static_cast<float>(sum / dim);
    const float inv = 1.0f / std::sqrt(variance + eps);
    for (int64_t i = 0; i < dim; ++i) yr[i] = w[i] * (xr[i] * inv);
  }
}

void DecoderModel::Rope(float* x, int64_t n, int heads, const std::vector<int64_t>& positions) {
  const int d = spec_.info.head_dim, half = d / 2;
  std::vector<float> cos_v(half), sin_v(half);
  for (int64_t t = 0; t < n; ++t) {
    // The angle is a float32 product as in the reference, so small positions match exactly.
    const float pos = static_cast<float>(positions[t]);
    for (int i = 0; i < half; ++i) {
      const float angle = pos * inv_freq_[i];
      cos_v[i] = std::cos(angle);
      sin_v[i] = std::sin(angle);
    }
    for (int hh = 0; hh < heads; ++hh) {
      float* v = x + (t * heads + hh) * d;
      for (int i = 0; i < half; ++i) {
        const float a = v[i], b = v[i + half];
        v[i] = a * cos_v[i] - b * sin_v[i];
        v[i + half] = b * cos_v[i] + a * sin_v[i];
      }
    }
  }
}

absl::Status DecoderModel::Forward(std::span<const SequenceChunk> batch, LayerAttention& attention,
                                   bool all_positions, std::vector<float>* logits) {
  const ModelInfo& m = spec_.info;
  const int64_t h = m.hidden_size, d = m.head_dim, vocab = m.vocab_size;
  const int hq = m.num_q_heads, hkv = m.num_kv_heads;
  const int64_t q_dim = hq * d, kv_dim = hkv * d, inter = spec_.intermediate_size;
  int64_t n = 0;
  std::vector<int64_t> row0(batch.size());
  std::vector<int64_t> positions;
  for (size_t s = 0; s < batch.size(); ++s) {
    row0[s] = n;
    n += static_cast<int64_t>(batch[s].tokens.size());
    for (size_t t = 0; t < batch[s].tokens.size(); ++t) {
      positions.push_back(batch[s].pos0 + static_cast<int64_t>(t));
    }
  }
  if (n == 0) return absl::InvalidArgumentError("Forward: the batch has no tokens");
  std::vector<SequenceRows> seq_rows(batch.size());
  for (size_t s = 0; s < batch.size(); ++s) {
    seq_rows[s].row0 = row0[s];
    seq_rows[s].num_tokens = static_cast<int64_t>(batch[s].tokens.size());
    seq_rows[s].pos0 = batch[s].pos0;
  }
  std::vector<float> x(n * h), xn(n * h), tmp(n * std::max(h, 2 * inter));
  for (size_t s = 0; s < batch.size(); ++s) {
    for (size_t t = 0; t < batch[s].tokens.size(); ++t) {
      const int64_t id = batch[s].tokens[t];
      if (id < 0 || id >= vocab) {
        return InvalidInput(
            absl::StrCat("token id at position ", batch[s].pos0 + t, " of sequence ", s),
            absl::StrCat("an id in [0, ", vocab, ")"), absl::StrCat(id));
      }
      std::memcpy(&x[(row0[s] + t) * h], &embed_[id * h], h * sizeof(float));
    }
  }
  std::vector<float> qkv(n * (q_dim + 2 * kv_dim));
  std::vector<float> q_pre(n * q_dim), q(n * q_dim), k(n * kv_dim), v(n * kv_dim);
  std::vector<float> attn(n * q_dim);
  for (int li = 0; li < m.num_layers; ++li) {
    const Layer& L = layers_[li];
    RmsNorm(x.data(), n, h, L.input_norm, xn.data());
    Apply(L.qkv, xn.data(), n, qkv.data());
    const int64_t stride = q_dim + 2 * kv_dim;
    for (int64_t r = 0; r < n; ++r) {
      const float* row = &qkv[r * stride];
      std::memcpy(&q_pre[r * q_dim], row, q_dim * sizeof(float));
      std::memcpy(&k[r * kv_dim], row + q_dim, kv_dim * sizeof(float));
      std::memcpy(&v[r * kv_dim], row + q_dim + kv_dim, kv_dim * sizeof(float));
    }
    if (spec_.qk_norm) {
      RmsNorm(q_pre.data(), n * hq, d, L.q_norm, q_pre.data());
      RmsNorm(k.data(), n * hkv, d, L.k_norm, k.data());
    }
    q = q_pre;
    Rope(q.data(), n, hq, positions);
    Rope(k.data(), n, hkv, positions);
    {
      LayerAttentionBatch in;
      in.layer = li;
      in.num_q_heads = hq;
      in.num_kv_heads = hkv;
      in.head_dim = static_cast<int>(d);
      in.seqs = seq_rows;
      in.q_pre_rope =
          TensorView::Contiguous(q_pre.data(), DType::kF32, DeviceType::kCpu, {n, hq, d});
      in.q = TensorView::Contiguous(q.data(), DType::kF32, DeviceType::kCpu, {n, hq, d});
      in.k = TensorView::Contiguous(k.data(), DType::kF32, DeviceType::kCpu, {n, hkv, d});
      in.v = TensorView::Contiguous(v.data(), DType::kF32, DeviceType::kCpu, {n, hkv, d});
      FLUXATTN_RETURN_IF_ERROR(attention.Attend(
          in, TensorView::Contiguous(attn.data(), DType::kF32, DeviceType::kCpu, {n, hq, d})));
    }
    Apply(L.o, attn.data(), n, tmp.data());
    for (int64_t i = 0; i < n * h; ++i) x[i] += tmp[i];
    RmsNorm(x.data(), n, h, L.post_norm, xn.data());
    Apply(L.gate_up, xn.data(), n, tmp.data());
    // SwiGLU: silu(gate) * up, written over the gate half of each row.
    std::vector<float> act(n * inter);
    for (int64_t r = 0; r < n; ++r) {
      const float* g = &tmp[r * 2 * inter];
      const float* u = g + inter;
      float* a = &act[r * inter];
      for (int64_t i = 0; i < inter; ++i) a[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
    }
    Apply(L.down, act.data(), n, tmp.data());
    for (int64_t i = 0; i < n * h; ++i) x[i] += tmp[i];
  }
  // Logits only for the rows asked for.
  std::vector<int64_t> rows;
  for (size_t s = 0; s < batch.size(); ++s) {
    const int64_t len = static_cast<int64_t>(batch[s].tokens.size());
    if (all_positions) {
      for (int64_t t = 0; t < len; ++t) rows.push_back(row0[s] + t);
    } else if (len > 0) {
      rows.push_back(row0[s] + len - 1);
    }
  }
  std::vector<float> selected(rows.size() * h);
  for (size_t r = 0; r < rows.size(); ++r) {
    std::memcpy(&selected[r * h], &x[rows[r] * h], h * sizeof(float));
  }
  RmsNorm(selected.data(), rows.size(), h, final_norm_, selected.data());
  logits->resize(rows.size() * vocab);
  Apply(lm_head_, selected.data(), rows.size(), logits->data());
  return absl::OkStatus();
}

}  // namespace

std::vector<ExpectedTensor> ExpectedTensors(const ModelSpec& spec) {
  const ModelInfo& m = spec.info;
  const int64_t h = m.hidden_size, d = m.head_dim, v = m.vocab_size;
  const int64_t inter = spec.intermediate_size;
  const int64_t q_dim = int64_t{m.num_q_heads} * d, kv_dim = int64_t{m.num_kv_heads} * d;
  std::vector<ExpectedTensor> out = {{"model.embed_tokens.weight", {v, h}},
                                     {"model.norm.weight", {h}}};
  if (!spec.tie_word_embeddings) out.push_back({"lm_head.weight", {v, h}});
  for (int i = 0; i < m.num_layers; ++i) {
    out.push_back({LayerName(i, "input_layernorm.weight"), {h}});
    out.push_back({LayerName(i, "post_attention_layernorm.weight"), {h}});
    auto linear = [&](const std::string& name, int64_t rows, int64_t cols, bool bias) {
      out.push_back({LayerName(i, name + ".weight"), {rows, cols}});
      if (bias) out.push_back({LayerName(i, name + ".bias"), {rows}});
    };
    linear("self_attn.q_proj", q_dim, h, spec.qkv_bias);
    linear("self_attn.k_proj", kv_dim, h, spec.qkv_bias);
    linear("self_attn.v_proj", kv_dim, h, spec.qkv_bias);
    linear("self_attn.o_proj", h, q_dim, spec.o_bias);
    if (spec.qk_norm) {
      out.push_back({LayerName(i, "self_attn.q_norm.weight"), {d}});
      out.push_back({LayerName(i, "self_attn.k_norm.weight"), {d}});
    }
    linear("mlp.gate_proj", inter, h, spec.mlp_bias);
    linear("mlp.up_proj", inter, h, spec.mlp_bias);
    linear("mlp.down_proj", h, inter, spec.mlp_bias);
  }
  return out;
}

absl::StatusOr<std::unique_ptr<LanguageModel>> CreateLanguageModel(
    ModelSpec spec, std::unique_ptr<WeightSource> weights, const ModelLoadOptions& options) {
  auto model = std::make_unique<DecoderModel>(std::move(spec), std::move(weights), options.threads);
  FLUXATTN_RETURN_IF_ERROR(model->Load());
  return std::unique_ptr<LanguageModel>(std::move(model));
}

absl::StatusOr<std::unique_ptr<LanguageModel>> LoadLanguageModel(const std::string& dir,
                                                                 const ModelLoadOptions& options) {
  FLUXATTN_ASSIGN_OR_RETURN(ModelSpec spec, LoadModelConfig(dir));
  FLUXATTN_ASSIGN_OR_RETURN(std::unique_ptr<WeightSource> weights, OpenCheckpointWeights(dir));
  return CreateLanguageModel(std::move(spec), std::move(weights), options);
}

std::vector<std::string> InMemoryWeights::Names() const {
  std::vector<std::string> names;
  for (const auto& [name, t] : tensors_) names.push_back(name);
  return names;
}

absl::StatusOr<Tensor> InMemoryWeights::GetF32(const std::string& name,
                                               const std::vector<int64_t>& expected_shape) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) {
    return absl::NotFoundError(
        absl::StrCat("weights: tensor '", name, "': expected present, found missing"));
  }
  if (!expected_shape.empty() && it->second.shape() != expected_shape) {
    return InvalidInput(absl::StrCat("weights: tensor '", name, "'"),
                        absl::StrCat("shape ", ShapeToString(expected_shape)),
                        ShapeToString(it->second.shape()));
  }
  return it->second;
}

absl::StatusOr<std::unique_ptr<InMemoryWeights>> RandomWeights(const ModelSpec& spec,
                                                               uint64_t seed) {
  auto weights = std::make_unique<InMemoryWeights>();
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  for (const ExpectedTensor& e : ExpectedTensors(spec)) {
    FLUXATTN_ASSIGN_OR_RETURN(Tensor t, Tensor::Empty(e.shape, DType::kF32, CpuDevice()));
    float* p = t.data<float>();
    const bool is_norm = e.name.find("norm") != std::string::npos;
    for (int64_t i = 0; i < t.numel(); ++i) p[i] = is_norm ? 1.0f + normal(rng) : normal(rng);
    weights->Add(e.name, std::move(t));
  }
  return weights;
}

}  // namespace fluxattn::models
