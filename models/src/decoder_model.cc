#include "fluxattn/models/decoder_model.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "cuda_decoder_model.h"
#include "fluxattn/kernels/cpu_dense.h"
#include "fluxattn/models/safetensors.h"
#include "fluxattn/status.h"
#include "fluxattn/thread_pool.h"
#include "weight_arena.h"

namespace fluxattn::models {
namespace {

std::string LayerName(int layer, const std::string& suffix) {
  return absl::StrCat("model.layers.", layer, ".", suffix);
}

// A weight matrix [out, in] as stored in the checkpoint (float32, bfloat16 or float16; `tensor`
// keeps its memory alive, for a memory-mapped checkpoint a view into the mapping).
struct Weight {
  std::string name;  // in the checkpoint
  Tensor tensor;
  const void* data = nullptr;
  DType type = DType::kF32;
};

struct Layer {
  std::vector<float> input_norm;
  std::vector<float> post_norm;
  std::vector<float> q_norm;  // empty without per-head norms
  std::vector<float> k_norm;
  Weight q, k, v, o, gate, up, down;
  std::vector<float> q_bias, k_bias, v_bias, o_bias;  // empty: none
  std::vector<float> gate_bias, up_bias, down_bias;
};

const float* BiasOrNull(const std::vector<float>& b) { return b.empty() ? nullptr : b.data(); }

// The first non-finite element of `t` (float32, bfloat16 or float16), by its bits: -1 if none;
// *nan tells NaN from infinity.
int64_t FirstNonFinite(const Tensor& t, bool* nan) {
  const int64_t n = t.numel();
  if (t.dtype() == DType::kF32) {
    const uint32_t* p = static_cast<const uint32_t*>(t.raw_data());
    for (int64_t i = 0; i < n; ++i) {
      if ((p[i] & 0x7f800000u) == 0x7f800000u) {
        *nan = (p[i] & 0x007fffffu) != 0;
        return i;
      }
    }
    return -1;
  }
  const uint16_t* p = static_cast<const uint16_t*>(t.raw_data());
  const uint16_t exp_mask = t.dtype() == DType::kBF16 ? 0x7f80 : 0x7c00;
  for (int64_t i = 0; i < n; ++i) {
    if ((p[i] & exp_mask) == exp_mask) {
      *nan = (p[i] & static_cast<uint16_t>(~exp_mask & 0x7fff)) != 0;
      return i;
    }
  }
  return -1;
}

// Buffers of one Forward call, kept between calls (grown, never shrunk) so that no layer
// allocates.
struct Scratch {
  std::vector<float> x, xn, tmp, act;
  std::vector<float> q_pre, q, k, v, attn;
  std::vector<float> selected;
  std::vector<const float*> rope_rows;
  std::vector<SequenceRows> seq_rows;
};

void Grow(std::vector<float>& v, int64_t n) {
  if (static_cast<int64_t>(v.size()) < n) v.resize(n);
}

class DecoderModel : public LanguageModel {
 public:
  DecoderModel(ModelSpec spec, std::unique_ptr<WeightSource> weights, int threads,
               DType activations)
      : spec_(std::move(spec)), weights_(std::move(weights)), act_(activations) {
    SetThreads(threads);
    inv_freq_ = RopeInverseFrequencies(spec_.rope, spec_.info.head_dim);
  }

  absl::Status Load();

  const ModelInfo& info() const override { return spec_.info; }
  const WeightSource& weights() const override { return *weights_; }
  const std::vector<int64_t>& stop_token_ids() const override { return spec_.eos_token_ids; }
  // One pool for the model and attention: the process-wide one.
  void SetThreads(int threads) override { SetCpuThreads(threads); }
  int threads() const override { return CpuThreads(); }

  absl::Status Forward(std::span<const SequenceChunk> batch, LayerAttention& attention,
                       bool all_positions, std::vector<float>* logits) override;

 private:
  absl::Status CheckFinite(const std::string& name, const Tensor& t) const {
    // One NaN or infinite weight turns every logit into NaN and greedy decoding then silently
    // returns token 0; a corrupt checkpoint is refused at load instead.
    bool nan = false;
    const int64_t i = FirstNonFinite(t, &nan);
    if (i < 0) return absl::OkStatus();
    return InvalidInput(absl::StrCat(spec_.info.path.empty() ? "weights" : spec_.info.path,
                                     ": tensor '", name, "'"),
                        "finite weights",
                        absl::StrCat(nan ? "NaN" : "an infinite value", " at element ", i));
  }
  // A small tensor (norm weights, biases) converted to float32.
  absl::StatusOr<std::vector<float>> Get(const std::string& name,
                                         const std::vector<int64_t>& shape) {
    FLUXATTN_ASSIGN_OR_RETURN(Tensor t, weights_->GetF32(name, shape));
    FLUXATTN_RETURN_IF_ERROR(CheckFinite(name, t));
    const float* p = t.data<float>();
    return std::vector<float>(p, p + t.numel());
  }
  // A weight matrix as stored; float32 only where the dtype is not one the kernels read.
  absl::StatusOr<Weight> GetWeight(const std::string& name, const std::vector<int64_t>& shape) {
    FLUXATTN_ASSIGN_OR_RETURN(Tensor t, weights_->GetRaw(name, shape));
    if (t.dtype() != DType::kF32 && t.dtype() != DType::kBF16 && t.dtype() != DType::kF16) {
      FLUXATTN_ASSIGN_OR_RETURN(t, weights_->GetF32(name, shape));
    }
    Weight w;
    w.name = name;
    w.data = t.raw_data();
    w.type = t.dtype();
    w.tensor = std::move(t);
    return w;
  }
  absl::Status LoadProjection(int layer, const std::string& name, int64_t rows, int64_t in,
                              bool bias, Weight* w, std::vector<float>* b) {
    FLUXATTN_ASSIGN_OR_RETURN(*w, GetWeight(LayerName(layer, name + ".weight"), {rows, in}));
    if (bias) {
      FLUXATTN_ASSIGN_OR_RETURN(*b, Get(LayerName(layer, name + ".bias"), {rows}));
    }
    return absl::OkStatus();
  }
  // Every matrix checked for non-finite values and, with `arena`, copied into one huge-page
  // arena (weight_arena.h) as stored (no conversion), the checkpoint's pages handed back.
  absl::Status CheckAndPlaceMatrices(bool arena);
  // Rows of the RoPE table up to `positions` (cos then sin of every frequency per position).
  void EnsureRopeTable(int64_t positions);

  ModelSpec spec_;
  std::unique_ptr<WeightSource> weights_;
  std::vector<float> inv_freq_;
  Weight embed_;  // [vocab, hidden]
  std::vector<float> final_norm_;
  Weight lm_head_;           // the embedding itself when tied (no copy)
  DType act_ = DType::kF32;  // the activations of the matrix products
  std::vector<Layer> layers_;
  WeightArena arena_;              // the matrices, when FLUXATTN_CPU_HUGEPAGES is not 0
  std::vector<float> rope_table_;  // [positions][head_dim]: cos[half], sin[half]
  int64_t rope_positions_ = 0;
  Scratch scratch_;
};

absl::Status DecoderModel::Load() {
  const ModelInfo& m = spec_.info;
  const int64_t h = m.hidden_size, d = m.head_dim, v = m.vocab_size;
  const int64_t inter = spec_.intermediate_size;
  const int64_t q_dim = int64_t{m.num_q_heads} * d, kv_dim = int64_t{m.num_kv_heads} * d;
  FLUXATTN_ASSIGN_OR_RETURN(embed_, GetWeight("model.embed_tokens.weight", {v, h}));
  FLUXATTN_ASSIGN_OR_RETURN(final_norm_, Get("model.norm.weight", {h}));
  if (spec_.tie_word_embeddings) {
    lm_head_ = embed_;
  } else {
    FLUXATTN_ASSIGN_OR_RETURN(lm_head_, GetWeight("lm_head.weight", {v, h}));
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
    FLUXATTN_RETURN_IF_ERROR(
        LoadProjection(i, "self_attn.q_proj", q_dim, h, spec_.qkv_bias, &L.q, &L.q_bias));
    FLUXATTN_RETURN_IF_ERROR(
        LoadProjection(i, "self_attn.k_proj", kv_dim, h, spec_.qkv_bias, &L.k, &L.k_bias));
    FLUXATTN_RETURN_IF_ERROR(
        LoadProjection(i, "self_attn.v_proj", kv_dim, h, spec_.qkv_bias, &L.v, &L.v_bias));
    FLUXATTN_RETURN_IF_ERROR(
        LoadProjection(i, "self_attn.o_proj", h, q_dim, spec_.o_bias, &L.o, &L.o_bias));
    FLUXATTN_RETURN_IF_ERROR(
        LoadProjection(i, "mlp.gate_proj", inter, h, spec_.mlp_bias, &L.gate, &L.gate_bias));
    FLUXATTN_RETURN_IF_ERROR(
        LoadProjection(i, "mlp.up_proj", inter, h, spec_.mlp_bias, &L.up, &L.up_bias));
    FLUXATTN_RETURN_IF_ERROR(
        LoadProjection(i, "mlp.down_proj", h, inter, spec_.mlp_bias, &L.down, &L.down_bias));
  }
  FLUXATTN_ASSIGN_OR_RETURN(const bool arena, WeightArena::Wanted());
  return CheckAndPlaceMatrices(arena);
}

absl::Status DecoderModel::CheckAndPlaceMatrices(bool arena) {
  std::vector<Weight*> all = {&embed_};
  if (!spec_.tie_word_embeddings) all.push_back(&lm_head_);
  for (Layer& L : layers_) {
    for (Weight* w : {&L.q, &L.k, &L.v, &L.o, &L.gate, &L.up, &L.down}) all.push_back(w);
  }
  if (arena) {
    size_t total = 0;
    for (const Weight* w : all) {
      total += (w->tensor.nbytes() + WeightArena::kAlign - 1) / WeightArena::kAlign *
               WeightArena::kAlign;
    }
    FLUXATTN_RETURN_IF_ERROR(arena_.Reserve(total));
  }
  // One matrix at a time: checked where it is stored, copied, its stored pages handed back, so
  // that at most one matrix is resident twice.
  for (Weight* w : all) {
    FLUXATTN_RETURN_IF_ERROR(CheckFinite(w->name, w->tensor));
    if (!arena) continue;
    const size_t bytes = w->tensor.nbytes();
    void* dst = arena_.Take(bytes);
    if (dst == nullptr) return absl::InternalError("CPU weights: the arena is too small");
    std::memcpy(dst, w->data, bytes);
    WeightArena::PageOut(w->data, bytes);
    w->data = dst;
    w->tensor = Tensor();
  }
  if (spec_.tie_word_embeddings) lm_head_ = embed_;
  return absl::OkStatus();
}

void DecoderModel::EnsureRopeTable(int64_t positions) {
  if (positions <= rope_positions_) return;
  const int d = spec_.info.head_dim, half = d / 2;
  // Grown in steps of 4096 positions (or doubled), so long generations extend it rarely.
  const int64_t target = std::max({positions, rope_positions_ * 2, int64_t{4096}});
  rope_table_.resize(target * d);
  for (int64_t p = rope_positions_; p < target; ++p) {
    // The angle is a float32 product as in the reference, so small positions match exactly.
    const float pos = static_cast<float>(p);
    float* row = &rope_table_[p * d];
    for (int i = 0; i < half; ++i) {
      const float angle = pos * inv_freq_[i];
      row[i] = std::cos(angle);
      row[half + i] = std::sin(angle);
    }
  }
  rope_positions_ = target;
}

absl::Status DecoderModel::Forward(std::span<const SequenceChunk> batch, LayerAttention& attention,
                                   bool all_positions, std::vector<float>* logits) {
  const ModelInfo& m = spec_.info;
  const int64_t h = m.hidden_size, d = m.head_dim, vocab = m.vocab_size;
  const int hq = m.num_q_heads, hkv = m.num_kv_heads;
  const int64_t q_dim = hq * d, kv_dim = hkv * d, inter = spec_.intermediate_size;
  const float eps = static_cast<float>(spec_.rms_norm_eps);
  int64_t n = 0;
  std::vector<int64_t> row0(batch.size());
  int64_t max_pos = 0;
  for (size_t s = 0; s < batch.size(); ++s) {
    row0[s] = n;
    n += static_cast<int64_t>(batch[s].tokens.size());
    max_pos = std::max(max_pos, batch[s].pos0 + static_cast<int64_t>(batch[s].tokens.size()));
  }
  if (n == 0) return absl::InvalidArgumentError("Forward: the batch has no tokens");
  Scratch& sc = scratch_;
  sc.seq_rows.resize(batch.size());
  for (size_t s = 0; s < batch.size(); ++s) {
    sc.seq_rows[s].row0 = row0[s];
    sc.seq_rows[s].num_tokens = static_cast<int64_t>(batch[s].tokens.size());
    sc.seq_rows[s].pos0 = batch[s].pos0;
  }
  Grow(sc.x, n * h);
  Grow(sc.xn, n * h);
  Grow(sc.tmp, n * std::max(h, 2 * inter));
  Grow(sc.act, n * inter);
  Grow(sc.q_pre, n * q_dim);
  Grow(sc.q, n * q_dim);
  Grow(sc.k, n * kv_dim);
  Grow(sc.v, n * kv_dim);
  Grow(sc.attn, n * q_dim);
  float* x = sc.x.data();
  float* xn = sc.xn.data();
  float* tmp = sc.tmp.data();
  for (size_t s = 0; s < batch.size(); ++s) {
    for (size_t t = 0; t < batch[s].tokens.size(); ++t) {
      const int64_t id = batch[s].tokens[t];
      if (id < 0 || id >= vocab) {
        return InvalidInput(
            absl::StrCat("token id at position ", batch[s].pos0 + t, " of sequence ", s),
            absl::StrCat("an id in [0, ", vocab, ")"), absl::StrCat(id));
      }
      cpu::ConvertRow(embed_.data, embed_.type, id, h, &x[(row0[s] + t) * h]);
    }
  }
  EnsureRopeTable(max_pos);
  sc.rope_rows.resize(n);
  for (size_t s = 0; s < batch.size(); ++s) {
    for (size_t t = 0; t < batch[s].tokens.size(); ++t) {
      sc.rope_rows[row0[s] + t] = &rope_table_[(batch[s].pos0 + t) * d];
    }
  }
  std::vector<float>& q_pre = sc.q_pre;
  std::vector<float>& q = sc.q;
  std::vector<float>& k = sc.k;
  std::vector<float>& v = sc.v;
  std::vector<float>& attn = sc.attn;
  for (int li = 0; li < m.num_layers; ++li) {
    const Layer& L = layers_[li];
    cpu::RmsNorm(x, n, h, L.input_norm.data(), eps, xn);
    const cpu::LinearPart qkv[3] = {
        {L.q.data, L.q.type, q_dim, BiasOrNull(L.q_bias), q_pre.data(), q_dim},
        {L.k.data, L.k.type, kv_dim, BiasOrNull(L.k_bias), k.data(), kv_dim},
        {L.v.data, L.v.type, kv_dim, BiasOrNull(L.v_bias), v.data(), kv_dim}};
    cpu::Linear(xn, h, n, h, qkv, 3, act_);
    if (spec_.qk_norm) {
      cpu::RmsNorm(q_pre.data(), n * hq, d, L.q_norm.data(), eps, q_pre.data());
      cpu::RmsNorm(k.data(), n * hkv, d, L.k_norm.data(), eps, k.data());
    }
    std::memcpy(q.data(), q_pre.data(), n * q_dim * sizeof(float));
    cpu::Rope(q.data(), n, hq, static_cast<int>(d), sc.rope_rows.data());
    cpu::Rope(k.data(), n, hkv, static_cast<int>(d), sc.rope_rows.data());
    {
      LayerAttentionBatch in;
      in.layer = li;
      in.num_q_heads = hq;
      in.num_kv_heads = hkv;
      in.head_dim = static_cast<int>(d);
      in.seqs = sc.seq_rows;
      in.q_pre_rope =
          TensorView::Contiguous(q_pre.data(), DType::kF32, DeviceType::kCpu, {n, hq, d});
      in.q = TensorView::Contiguous(q.data(), DType::kF32, DeviceType::kCpu, {n, hq, d});
      in.k = TensorView::Contiguous(k.data(), DType::kF32, DeviceType::kCpu, {n, hkv, d});
      in.v = TensorView::Contiguous(v.data(), DType::kF32, DeviceType::kCpu, {n, hkv, d});
      FLUXATTN_RETURN_IF_ERROR(attention.Attend(
          in, TensorView::Contiguous(attn.data(), DType::kF32, DeviceType::kCpu, {n, hq, d})));
    }
    const cpu::LinearPart o{L.o.data, L.o.type, h, BiasOrNull(L.o_bias), tmp, h};
    cpu::Linear(attn.data(), q_dim, n, q_dim, &o, 1, act_);
    cpu::AddInPlace(x, tmp, n * h);
    cpu::RmsNorm(x, n, h, L.post_norm.data(), eps, xn);
    // Gate and up side by side in each row of tmp, then SwiGLU: silu(gate) * up.
    const cpu::LinearPart gate_up[2] = {
        {L.gate.data, L.gate.type, inter, BiasOrNull(L.gate_bias), tmp, 2 * inter},
        {L.up.data, L.up.type, inter, BiasOrNull(L.up_bias), tmp + inter, 2 * inter}};
    cpu::Linear(xn, h, n, h, gate_up, 2, act_);
    cpu::SwiGlu(tmp, n, inter, sc.act.data());
    const cpu::LinearPart down{L.down.data, L.down.type, h, BiasOrNull(L.down_bias), tmp, h};
    cpu::Linear(sc.act.data(), inter, n, inter, &down, 1, act_);
    cpu::AddInPlace(x, tmp, n * h);
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
  const int64_t nr = static_cast<int64_t>(rows.size());
  Grow(sc.selected, nr * h);
  for (int64_t r = 0; r < nr; ++r) {
    std::memcpy(&sc.selected[r * h], &x[rows[r] * h], h * sizeof(float));
  }
  cpu::RmsNorm(sc.selected.data(), nr, h, final_norm_.data(), eps, sc.selected.data());
  logits->resize(nr * vocab);
  const cpu::LinearPart head{lm_head_.data, lm_head_.type, vocab, nullptr, logits->data(), vocab};
  cpu::Linear(sc.selected.data(), h, nr, h, &head, 1, act_);
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

absl::StatusOr<ModelLoadOptions> ModelLoadOptionsFor(const std::string& where,
                                                     const std::string& device,
                                                     const std::string& dtype, int threads) {
  // The spelling only: whether the GPU is there is found out when the model is loaded.
  int ordinal = 0;
  const bool cuda =
      device == "cuda" ||
      (device.rfind("cuda:", 0) == 0 &&
       absl::SimpleAtoi(absl::string_view(device).substr(5), &ordinal) && ordinal >= 0);
  if (!cuda && device != "cpu") {
    return InvalidInput(absl::StrCat(where, " device"), "\"cpu\", \"cuda\" or \"cuda:N\"",
                        absl::StrCat("\"", device, "\""));
  }
  const bool ok = dtype.empty() || dtype == "f32" || dtype == "bf16";
  if (!ok) {
    return InvalidInput(absl::StrCat(where, " dtype"),
                        cuda ? "\"bf16\" (bf16 weights and activations, f32 accumulation) or "
                               "\"f32\" (f32 weights and activations) on cuda"
                             : "\"f32\" or \"bf16\" on the cpu (the activations of the matrix "
                               "products; weights used as stored)",
                        absl::StrCat("\"", dtype, "\""));
  }
  ModelLoadOptions options;
  options.threads = threads;
  options.device = device;
  if (!cuda && dtype == "bf16") options.cpu_activations = DType::kBF16;
  if (cuda && dtype == "f32") options.cuda_compute = DType::kF32;
  return options;
}

absl::StatusOr<ModelLoadOptions> ModelLoadOptionsFromConfig(const EngineConfig& config,
                                                            const std::string& config_path,
                                                            const std::string& device_flag,
                                                            int threads_flag) {
  const int threads = threads_flag >= 0 ? threads_flag : config.model.threads;
  if (!device_flag.empty()) return ModelLoadOptionsFor("--device", device_flag, "", threads);
  const std::string dtype = config.locations.count("model.dtype") ? config.model.dtype : "";
  const std::string where =
      config_path.empty() ? "[model]" : absl::StrCat(config_path, ": [model]");
  return ModelLoadOptionsFor(where, config.model.device, dtype, threads);
}

absl::StatusOr<std::unique_ptr<LanguageModel>> CreateLanguageModel(
    ModelSpec spec, std::unique_ptr<WeightSource> weights, const ModelLoadOptions& options) {
  FLUXATTN_ASSIGN_OR_RETURN(Device * device, DeviceFromString(options.device));
  if (device->type() == DeviceType::kCuda) {
    return CreateCudaLanguageModel(std::move(spec), std::move(weights), device, options.threads,
                                   options.cuda_compute);
  }
  auto model = std::make_unique<DecoderModel>(std::move(spec), std::move(weights), options.threads,
                                              options.cpu_activations);
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

absl::StatusOr<Tensor> InMemoryWeights::GetRaw(const std::string& name,
                                               const std::vector<int64_t>& expected_shape) const {
  return GetF32(name, expected_shape);  // held as given
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
