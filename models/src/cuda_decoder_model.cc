#include "cuda_decoder_model.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "fluxattn/status.h"
#include "fluxattn/thread_pool.h"

#if defined(FLUXATTN_WITH_CUDA)
#include "fluxattn/kernels/cuda_model_ops.h"
#endif

namespace fluxattn::models {

#if !defined(FLUXATTN_WITH_CUDA)

absl::StatusOr<std::unique_ptr<LanguageModel>> CreateCudaLanguageModel(
    ModelSpec, std::unique_ptr<WeightSource>, Device* device, int, DType) {
  return InvalidInput("model device", "\"cpu\" (this build has no CUDA)",
                      absl::StrCat("\"", device != nullptr ? device->name() : "?", "\""));
}

#else

namespace {

namespace kc = ::fluxattn::kernels::cuda;

std::string LayerName(int layer, const std::string& suffix) {
  return absl::StrCat("model.layers.", layer, ".", suffix);
}

struct Layer {
  void* input_norm = nullptr;
  void* post_norm = nullptr;
  void* q_norm = nullptr;  // null without per-head norms
  void* k_norm = nullptr;
  void* qkv = nullptr;  // [q_dim + 2 kv_dim, hidden]: q rows, then k rows, then v rows
  void* o = nullptr;
  void* gate_up = nullptr;  // [2 * intermediate, hidden]: gate rows, then up rows
  void* down = nullptr;
  void *qkv_bias = nullptr, *o_bias = nullptr;
  void *gate_up_bias = nullptr, *down_bias = nullptr;
};

class CudaDecoderModel : public LanguageModel {
 public:
  CudaDecoderModel(ModelSpec spec, std::unique_ptr<WeightSource> weights, Device* device,
                   DType compute)
      : spec_(std::move(spec)),
        weights_(std::move(weights)),
        device_(device),
        compute_(compute),
        ops_(kc::RowKernelsFor(compute == DType::kF32)) {
    for (DeviceBuffer* b : {&x_, &xn_, &qkv_, &q_pre_, &q_, &k_, &v_, &attn_, &tmp_, &act_, &sel_,
                            &logits_, &staging_, &sample_}) {
      b->Bind(device_);
    }
  }
  ~CudaDecoderModel() override {
    (void)device_->Synchronize();
    if (profile_ != nullptr) std::fputs(profile_->Report().c_str(), stderr);
    for (void* p : owned_) device_->Free(p);
  }

  absl::Status Load();

  const ModelInfo& info() const override { return spec_.info; }
  const WeightSource& weights() const override { return *weights_; }
  const std::vector<int64_t>& stop_token_ids() const override { return spec_.eos_token_ids; }
  void SetThreads(int threads) override { SetCpuThreads(threads); }
  int threads() const override { return CpuThreads(); }
  Device* device() const override { return device_; }
  DType activation_dtype() const override { return compute_; }

  absl::Status Forward(std::span<const SequenceChunk> batch, LayerAttention& attention,
                       bool all_positions, std::vector<float>* logits) override;
  bool SamplesOnDevice() const override { return true; }
  absl::Status ForwardSample(std::span<const SequenceChunk> batch, LayerAttention& attention,
                             std::span<const SampleParams> params,
                             std::vector<int64_t>* tokens) override;
  absl::Status ForwardGreedy(std::span<const SequenceChunk> batch, LayerAttention& attention,
                             std::vector<int64_t>* tokens) override;
  absl::Status ReserveSteps(int64_t max_rows, int64_t max_seqs) override;

 private:
  // The activation buffers of a pass of n rows, nr logits rows and num_seqs sequences (grown
  // where smaller).
  struct StepBuffers {
    void *x, *xn, *qkv, *q_pre, *q, *k, *v, *attn, *tmp, *act, *sel, *logits, *staging;
  };
  absl::StatusOr<StepBuffers> Buffers(int64_t n, int64_t nr, int64_t num_seqs);
  // Their sizes in bytes, in the order of StepBuffers.
  std::array<size_t, 13> BufferBytes(int64_t n, int64_t nr, int64_t num_seqs) const;
  // The forward pass up to the logits, left on the device: [rows, vocab] f32 (rows: one per
  // sequence, or one per token with all_positions).
  absl::StatusOr<const float*> Run(std::span<const SequenceChunk> batch, LayerAttention& attention,
                                   bool all_positions, int64_t* rows);
  // Run, then one token per sequence by kernels::cuda::Sample (empty `params`: greedy).
  absl::Status RunAndSample(std::span<const SequenceChunk> batch, LayerAttention& attention,
                            std::span<const SampleParams> params, std::vector<int64_t>* tokens);
  void* stream() const { return device_->default_stream()->native_handle(); }

  // Copies host bytes into a new device allocation owned by the model.
  absl::StatusOr<void*> Upload(const void* host, size_t bytes) {
    FLUXATTN_ASSIGN_OR_RETURN(void* p, device_->Allocate(bytes));
    owned_.push_back(p);
    FLUXATTN_RETURN_IF_ERROR(
        device_->Copy(p, host, bytes, CopyKind::kHostToDevice, device_->default_stream()));
    return p;
  }
  // The tensor's values as bfloat16 (stored bf16 is copied as is; other types round to nearest
  // even), appended to `out`. Non-finite weights are refused, naming the tensor.
  absl::Status AppendBf16(const std::string& name, const std::vector<int64_t>& shape,
                          std::vector<uint16_t>* out) {
    FLUXATTN_ASSIGN_OR_RETURN(Tensor raw, weights_->GetRaw(name, shape));
    const size_t base = out->size();
    const int64_t n = raw.numel();
    out->resize(base + n);
    if (raw.dtype() == DType::kBF16) {
      std::memcpy(out->data() + base, raw.raw_data(), n * sizeof(uint16_t));
    } else {
      FLUXATTN_ASSIGN_OR_RETURN(Tensor f, weights_->GetF32(name, shape));
      const float* p = f.data<float>();
      for (int64_t i = 0; i < n; ++i) (*out)[base + i] = FloatToBF16(p[i]);
    }
    for (int64_t i = 0; i < n; ++i) {
      const uint16_t b = (*out)[base + i];
      if ((b & 0x7f80) == 0x7f80) {
        return InvalidInput(
            absl::StrCat(spec_.info.path.empty() ? "weights" : spec_.info.path, ": tensor '", name,
                         "'"),
            "finite weights",
            absl::StrCat((b & 0x007f) != 0 ? "NaN" : "an infinite value", " at element ", i));
      }
    }
    return absl::OkStatus();
  }
  // The tensor's values as float32, appended to `out`; non-finite weights are refused.
  absl::Status AppendF32(const std::string& name, const std::vector<int64_t>& shape,
                         std::vector<float>* out) {
    FLUXATTN_ASSIGN_OR_RETURN(Tensor f, weights_->GetF32(name, shape));
    const float* p = f.data<float>();
    for (int64_t i = 0; i < f.numel(); ++i) {
      if (!std::isfinite(p[i])) {
        return InvalidInput(
            absl::StrCat(spec_.info.path.empty() ? "weights" : spec_.info.path, ": tensor '", name,
                         "'"),
            "finite weights",
            absl::StrCat(std::isnan(p[i]) ? "NaN" : "an infinite value", " at element ", i));
      }
    }
    out->insert(out->end(), p, p + f.numel());
    return absl::OkStatus();
  }
  // One or more tensors concatenated along their first dimension, as one device array of the
  // compute dtype (bf16, or f32 for f32 compute).
  absl::StatusOr<void*> UploadWeights(
      std::initializer_list<std::pair<std::string, std::vector<int64_t>>> parts) {
    if (compute_ == DType::kF32) {
      std::vector<float> host;
      for (const auto& [name, shape] : parts) {
        FLUXATTN_RETURN_IF_ERROR(AppendF32(name, shape, &host));
      }
      return Upload(host.data(), host.size() * sizeof(float));
    }
    std::vector<uint16_t> host;
    for (const auto& [name, shape] : parts) {
      FLUXATTN_RETURN_IF_ERROR(AppendBf16(name, shape, &host));
    }
    return Upload(host.data(), host.size() * sizeof(uint16_t));
  }

  ModelSpec spec_;
  std::unique_ptr<WeightSource> weights_;
  Device* device_;
  DType compute_;              // kBF16 or kF32: weights, activations and kernels
  const kc::RowKernels& ops_;  // the row kernels of compute_
  std::vector<void*> owned_;
  std::unique_ptr<kc::Gemm> gemm_;
  void* embed_ = nullptr;
  void* final_norm_ = nullptr;
  void* lm_head_ = nullptr;
  float* inv_freq_ = nullptr;
  std::vector<Layer> layers_;
  DeviceBuffer x_, xn_, qkv_, q_pre_, q_, k_, v_, attn_, tmp_, act_, sel_, logits_, staging_;
  DeviceBuffer sample_;  // ForwardGreedy: the sampling parameters and the chosen ids
  std::vector<kc::SamplingParams> host_params_;
  std::vector<int32_t> host_ids_;
  std::vector<int32_t> host_staging_;
  std::vector<SequenceRows> seq_rows_;
  // FLUXATTN_CUDA_PROFILE=1: GPU time per operation, printed when the model goes.
  std::unique_ptr<kc::OpProfile> profile_ =
      kc::OpProfile::EnabledByEnvironment() ? std::make_unique<kc::OpProfile>() : nullptr;
};

absl::Status CudaDecoderModel::Load() {
  const ModelInfo& m = spec_.info;
  const int64_t h = m.hidden_size, d = m.head_dim, v = m.vocab_size;
  const int64_t inter = spec_.intermediate_size;
  const int64_t q_dim = int64_t{m.num_q_heads} * d, kv_dim = int64_t{m.num_kv_heads} * d;
  // The norm kernels read rows in 16-byte pieces; a warp holds a head of up to 256.
  if (h % 8 != 0 || d > 256) {
    return InvalidInput(absl::StrCat(m.path, ": hidden_size / head_dim"),
                        "a multiple of 8 / at most 256 on cuda", absl::StrCat(h, " / ", d));
  }
  FLUXATTN_ASSIGN_OR_RETURN(const bool autotune, kc::GemmAutotuneFromEnvironment());
  FLUXATTN_ASSIGN_OR_RETURN(gemm_, kc::Gemm::Create(32 << 20, true, autotune));
  FLUXATTN_ASSIGN_OR_RETURN(embed_, UploadWeights({{"model.embed_tokens.weight", {v, h}}}));
  FLUXATTN_ASSIGN_OR_RETURN(final_norm_, UploadWeights({{"model.norm.weight", {h}}}));
  if (spec_.tie_word_embeddings) {
    lm_head_ = embed_;
  } else {
    FLUXATTN_ASSIGN_OR_RETURN(lm_head_, UploadWeights({{"lm_head.weight", {v, h}}}));
  }
  const std::vector<float> inv_freq = RopeInverseFrequencies(spec_.rope, static_cast<int>(d));
  FLUXATTN_ASSIGN_OR_RETURN(void* f, Upload(inv_freq.data(), inv_freq.size() * sizeof(float)));
  inv_freq_ = static_cast<float*>(f);
  layers_.resize(m.num_layers);
  auto bias = [&](int i, const std::string& name, int64_t rows, bool has,
                  void** out) -> absl::Status {
    if (!has) return absl::OkStatus();
    FLUXATTN_ASSIGN_OR_RETURN(*out, UploadWeights({{LayerName(i, name + ".bias"), {rows}}}));
    return absl::OkStatus();
  };
  for (int i = 0; i < m.num_layers; ++i) {
    Layer& L = layers_[i];
    FLUXATTN_ASSIGN_OR_RETURN(L.input_norm,
                              UploadWeights({{LayerName(i, "input_layernorm.weight"), {h}}}));
    FLUXATTN_ASSIGN_OR_RETURN(
        L.post_norm, UploadWeights({{LayerName(i, "post_attention_layernorm.weight"), {h}}}));
    if (spec_.qk_norm) {
      FLUXATTN_ASSIGN_OR_RETURN(L.q_norm,
                                UploadWeights({{LayerName(i, "self_attn.q_norm.weight"), {d}}}));
      FLUXATTN_ASSIGN_OR_RETURN(L.k_norm,
                                UploadWeights({{LayerName(i, "self_attn.k_norm.weight"), {d}}}));
    }
    FLUXATTN_ASSIGN_OR_RETURN(
        L.qkv, UploadWeights({{LayerName(i, "self_attn.q_proj.weight"), {q_dim, h}},
                              {LayerName(i, "self_attn.k_proj.weight"), {kv_dim, h}},
                              {LayerName(i, "self_attn.v_proj.weight"), {kv_dim, h}}}));
    FLUXATTN_ASSIGN_OR_RETURN(
        L.o, UploadWeights({{LayerName(i, "self_attn.o_proj.weight"), {h, q_dim}}}));
    FLUXATTN_ASSIGN_OR_RETURN(L.gate_up,
                              UploadWeights({{LayerName(i, "mlp.gate_proj.weight"), {inter, h}},
                                             {LayerName(i, "mlp.up_proj.weight"), {inter, h}}}));
    FLUXATTN_ASSIGN_OR_RETURN(L.down,
                              UploadWeights({{LayerName(i, "mlp.down_proj.weight"), {h, inter}}}));
    if (spec_.qkv_bias) {
      FLUXATTN_ASSIGN_OR_RETURN(L.qkv_bias,
                                UploadWeights({{LayerName(i, "self_attn.q_proj.bias"), {q_dim}},
                                               {LayerName(i, "self_attn.k_proj.bias"), {kv_dim}},
                                               {LayerName(i, "self_attn.v_proj.bias"), {kv_dim}}}));
    }
    FLUXATTN_RETURN_IF_ERROR(bias(i, "self_attn.o_proj", h, spec_.o_bias, &L.o_bias));
    if (spec_.mlp_bias) {
      FLUXATTN_ASSIGN_OR_RETURN(L.gate_up_bias,
                                UploadWeights({{LayerName(i, "mlp.gate_proj.bias"), {inter}},
                                               {LayerName(i, "mlp.up_proj.bias"), {inter}}}));
    }
    FLUXATTN_RETURN_IF_ERROR(bias(i, "mlp.down_proj", h, spec_.mlp_bias, &L.down_bias));
  }
  return device_->Synchronize();
}

absl::Status CudaDecoderModel::Forward(std::span<const SequenceChunk> batch,
                                       LayerAttention& attention, bool all_positions,
                                       std::vector<float>* logits) {
  int64_t rows = 0;
  FLUXATTN_ASSIGN_OR_RETURN(const float* out, Run(batch, attention, all_positions, &rows));
  const int64_t vocab = spec_.info.vocab_size;
  Stream* st = device_->default_stream();
  logits->resize(rows * vocab);
  FLUXATTN_RETURN_IF_ERROR(device_->Copy(logits->data(), out, rows * vocab * sizeof(float),
                                         CopyKind::kDeviceToHost, st));
  return st->Synchronize();
}

absl::Status CudaDecoderModel::ForwardGreedy(std::span<const SequenceChunk> batch,
                                             LayerAttention& attention,
                                             std::vector<int64_t>* tokens) {
  // Greedy parameters: temperature 0 for every sequence.
  return RunAndSample(batch, attention, {}, tokens);
}

absl::Status CudaDecoderModel::ForwardSample(std::span<const SequenceChunk> batch,
                                             LayerAttention& attention,
                                             std::span<const SampleParams> params,
                                             std::vector<int64_t>* tokens) {
  if (params.size() != batch.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "ForwardSample: ", params.size(), " parameter sets for ", batch.size(), " sequences"));
  }
  return RunAndSample(batch, attention, params, tokens);
}

absl::Status CudaDecoderModel::RunAndSample(std::span<const SequenceChunk> batch,
                                            LayerAttention& attention,
                                            std::span<const SampleParams> params,
                                            std::vector<int64_t>* tokens) {
  int64_t rows = 0;
  FLUXATTN_ASSIGN_OR_RETURN(const float* out, Run(batch, attention, false, &rows));
  const int32_t n = static_cast<int32_t>(rows);
  // The sampling parameters and the chosen ids, one device block.
  const size_t params_bytes = n * sizeof(kc::SamplingParams);
  FLUXATTN_ASSIGN_OR_RETURN(void* scratch, sample_.Ensure(params_bytes + n * sizeof(int32_t)));
  host_params_.assign(n, kc::SamplingParams{});
  for (size_t i = 0; i < params.size() && i < host_params_.size(); ++i) {
    kc::SamplingParams& p = host_params_[i];
    p.temperature = static_cast<float>(params[i].temperature);
    p.top_k = params[i].top_k;
    p.top_p = static_cast<float>(params[i].top_p);
    p.seed = params[i].seed;
    p.step = params[i].step;
  }
  Stream* st = device_->default_stream();
  FLUXATTN_RETURN_IF_ERROR(
      device_->Copy(scratch, host_params_.data(), params_bytes, CopyKind::kHostToDevice, st));
  int32_t* ids = reinterpret_cast<int32_t*>(static_cast<char*>(scratch) + params_bytes);
  FLUXATTN_RETURN_IF_ERROR(kc::Sample(out, n, static_cast<int32_t>(spec_.info.vocab_size),
                                      static_cast<const kc::SamplingParams*>(scratch), ids,
                                      stream()));
  host_ids_.resize(n);
  FLUXATTN_RETURN_IF_ERROR(
      device_->Copy(host_ids_.data(), ids, n * sizeof(int32_t), CopyKind::kDeviceToHost, st));
  FLUXATTN_RETURN_IF_ERROR(st->Synchronize());
  tokens->assign(host_ids_.begin(), host_ids_.end());
  return absl::OkStatus();
}

std::array<size_t, 13> CudaDecoderModel::BufferBytes(int64_t n, int64_t nr,
                                                     int64_t num_seqs) const {
  const ModelInfo& m = spec_.info;
  const int64_t h = m.hidden_size, d = m.head_dim, vocab = m.vocab_size;
  const int64_t q_dim = m.num_q_heads * d, kv_dim = m.num_kv_heads * d;
  const int64_t inter = spec_.intermediate_size;
  const size_t bf = DTypeSize(compute_);
  auto b = [&](int64_t elems, size_t size) { return static_cast<size_t>(elems) * size; };
  return {b(n * h, bf),
          b(n * h, bf),
          b(n * (q_dim + 2 * kv_dim), bf),
          b(n * q_dim, bf),
          b(n * q_dim, bf),
          b(n * kv_dim, bf),
          b(n * kv_dim, bf),
          b(n * q_dim, bf),
          b(n * std::max(h, 2 * inter), bf),
          b(n * inter, bf),
          b(nr * h, bf),
          b(nr * vocab, sizeof(float)),
          b(2 * n + num_seqs + 1, sizeof(int32_t))};
}

absl::StatusOr<CudaDecoderModel::StepBuffers> CudaDecoderModel::Buffers(int64_t n, int64_t nr,
                                                                        int64_t num_seqs) {
  const std::array<size_t, 13> bytes = BufferBytes(n, nr, num_seqs);
  DeviceBuffer* owners[13] = {&x_,    &xn_,  &qkv_, &q_pre_, &q_,      &k_,      &v_,
                              &attn_, &tmp_, &act_, &sel_,   &logits_, &staging_};
  void* p[13];
  for (int i = 0; i < 13; ++i) {
    FLUXATTN_ASSIGN_OR_RETURN(p[i], owners[i]->Ensure(bytes[i]));
  }
  return StepBuffers{p[0], p[1], p[2], p[3],  p[4],  p[5], p[6],
                     p[7], p[8], p[9], p[10], p[11], p[12]};
}

absl::Status CudaDecoderModel::ReserveSteps(int64_t max_rows, int64_t max_seqs) {
  if (max_rows < 1 || max_seqs < 1 || max_seqs > max_rows) {
    return InvalidInput("cuda: step reservation rows / sequences",
                        "rows >= 1 and 1 <= sequences <= rows",
                        absl::StrCat(max_rows, " / ", max_seqs));
  }
  size_t need = 0;
  for (size_t b : BufferBytes(max_rows, max_seqs, max_seqs)) need += b;
  absl::StatusOr<StepBuffers> made = Buffers(max_rows, max_seqs, max_seqs);
  if (made.ok()) return absl::OkStatus();
  const absl::StatusOr<size_t> free_bytes = DeviceFreeBytes(device_);
  return absl::ResourceExhaustedError(absl::StrCat(
      device_->name(), ": activations of steps of ", max_rows, " tokens and ", max_seqs,
      " sequences: expected ", need >> 20, " MiB of device memory, found ",
      free_bytes.ok() ? absl::StrCat(*free_bytes >> 20, " MiB free") : "the free memory unknown",
      " (", made.status().message(), ")"));
}

absl::StatusOr<const float*> CudaDecoderModel::Run(std::span<const SequenceChunk> batch,
                                                   LayerAttention& attention, bool all_positions,
                                                   int64_t* rows_out) {
  const ModelInfo& m = spec_.info;
  const int64_t h = m.hidden_size, d = m.head_dim, vocab = m.vocab_size;
  const int hq = m.num_q_heads, hkv = m.num_kv_heads;
  const int64_t q_dim = hq * d, kv_dim = hkv * d, inter = spec_.intermediate_size;
  const float eps = static_cast<float>(spec_.rms_norm_eps);
  const int32_t num_seqs = static_cast<int32_t>(batch.size());
  int64_t n = 0;
  seq_rows_.resize(batch.size());
  for (size_t s = 0; s < batch.size(); ++s) {
    seq_rows_[s].row0 = n;
    seq_rows_[s].num_tokens = static_cast<int64_t>(batch[s].tokens.size());
    seq_rows_[s].pos0 = batch[s].pos0;
    n += seq_rows_[s].num_tokens;
  }
  if (n == 0) return absl::InvalidArgumentError("Forward: the batch has no tokens");
  if (!all_positions) {
    for (size_t s = 0; s < batch.size(); ++s) {
      if (batch[s].tokens.empty()) {
        return absl::InvalidArgumentError(
            absl::StrCat("Forward: sequence ", s, " has no tokens (cuda needs one per sequence)"));
      }
    }
  }
  // ids [n], positions [n], q_indptr [num_seqs + 1] in one upload.
  host_staging_.resize(2 * n + num_seqs + 1);
  int32_t* ids = host_staging_.data();
  int32_t* positions = ids + n;
  int32_t* q_indptr = positions + n;
  q_indptr[0] = 0;
  for (size_t s = 0; s < batch.size(); ++s) {
    const int64_t row0 = seq_rows_[s].row0;
    for (size_t t = 0; t < batch[s].tokens.size(); ++t) {
      const int64_t id = batch[s].tokens[t];
      if (id < 0 || id >= vocab) {
        return InvalidInput(
            absl::StrCat("token id at position ", batch[s].pos0 + t, " of sequence ", s),
            absl::StrCat("an id in [0, ", vocab, ")"), absl::StrCat(id));
      }
      ids[row0 + t] = static_cast<int32_t>(id);
      positions[row0 + t] = static_cast<int32_t>(batch[s].pos0 + t);
    }
    q_indptr[s + 1] = static_cast<int32_t>(row0 + seq_rows_[s].num_tokens);
  }
  const size_t bf = DTypeSize(compute_);  // bytes per activation element
  const int64_t nr = all_positions ? n : num_seqs;
  FLUXATTN_ASSIGN_OR_RETURN(const StepBuffers buf, Buffers(n, nr, num_seqs));
  void *x = buf.x, *xn = buf.xn, *qkv = buf.qkv, *q_pre = buf.q_pre, *q = buf.q, *k = buf.k;
  void *v = buf.v, *attn = buf.attn, *tmp = buf.tmp, *act = buf.act, *sel = buf.sel;
  void *out_logits = buf.logits, *staging = buf.staging;
  Stream* st = device_->default_stream();
  void* s = stream();
  FLUXATTN_RETURN_IF_ERROR(device_->Copy(staging, host_staging_.data(),
                                         host_staging_.size() * sizeof(int32_t),
                                         CopyKind::kHostToDevice, st));
  const int32_t* d_ids = static_cast<const int32_t*>(staging);
  const int32_t* d_positions = d_ids + n;
  const int32_t* d_q_indptr = d_positions + n;
  using OT = kc::Gemm::OutputType;
  const OT act_type = compute_ == DType::kF32 ? OT::kF32Inputs : OT::kBf16;
  const OT logits_type = compute_ == DType::kF32 ? OT::kF32Inputs : OT::kF32;
  const bool decode_pass = n == num_seqs;
  if (profile_ != nullptr) profile_->Begin(decode_pass ? "decode" : "prefill", s);
  auto mark = [&](const char* what) {
    if (profile_ != nullptr) profile_->Mark(what, s);
  };
  auto linear = [&](const void* in, const void* w, const void* b, void* out, int64_t rows,
                    int64_t cols, int64_t inner) -> absl::Status {
    FLUXATTN_RETURN_IF_ERROR(gemm_->Linear(in, w, out, rows, cols, inner, act_type, s));
    if (b != nullptr) {
      FLUXATTN_RETURN_IF_ERROR(ops_.add_bias(out, b, rows, static_cast<int32_t>(cols), cols, s));
    }
    return absl::OkStatus();
  };
  FLUXATTN_RETURN_IF_ERROR(
      ops_.embedding_gather(d_ids, n, embed_, vocab, static_cast<int32_t>(h), x, nullptr, s));
  mark("embedding");
  const int32_t hi = static_cast<int32_t>(h), di = static_cast<int32_t>(d);
  for (int li = 0; li < m.num_layers; ++li) {
    const Layer& L = layers_[li];
    if (li == 0) {
      FLUXATTN_RETURN_IF_ERROR(ops_.rms_norm(x, L.input_norm, xn, n, hi, eps, 0.f, s));
    } else {
      FLUXATTN_RETURN_IF_ERROR(ops_.add_rms_norm(x, tmp, L.input_norm, xn, n, hi, eps, 0.f, s));
    }
    mark("input norm");
    // One GEMM for q, k and v, then one pass: q/k norms, RoPE, the pre-RoPE queries.
    FLUXATTN_RETURN_IF_ERROR(linear(xn, L.qkv, L.qkv_bias, qkv, n, q_dim + 2 * kv_dim, h));
    mark("qkv_proj");
    FLUXATTN_RETURN_IF_ERROR(ops_.split_qkv_norm_rope(qkv, n, hq, hkv, di, di, L.q_norm, L.k_norm,
                                                      eps, d_positions, inv_freq_, 1.0f, q_pre, q,
                                                      k, v, s));
    mark("q/k norm + rope");
    {
      LayerAttentionBatch in;
      in.layer = li;
      in.num_q_heads = hq;
      in.num_kv_heads = hkv;
      in.head_dim = di;
      in.seqs = seq_rows_;
      const DeviceType dt = DeviceType::kCuda;
      const int32_t ord = device_->ordinal();
      in.q_pre_rope = TensorView::Contiguous(q_pre, compute_, dt, {n, hq, d}, ord);
      in.q = TensorView::Contiguous(q, compute_, dt, {n, hq, d}, ord);
      in.k = TensorView::Contiguous(k, compute_, dt, {n, hkv, d}, ord);
      in.v = TensorView::Contiguous(v, compute_, dt, {n, hkv, d}, ord);
      FLUXATTN_RETURN_IF_ERROR(
          attention.Attend(in, TensorView::Contiguous(attn, compute_, dt, {n, hq, d}, ord)));
    }
    mark("attention");
    FLUXATTN_RETURN_IF_ERROR(linear(attn, L.o, L.o_bias, tmp, n, h, q_dim));
    mark("o_proj");
    FLUXATTN_RETURN_IF_ERROR(ops_.add_rms_norm(x, tmp, L.post_norm, xn, n, hi, eps, 0.f, s));
    mark("post norm");
    FLUXATTN_RETURN_IF_ERROR(linear(xn, L.gate_up, L.gate_up_bias, tmp, n, 2 * inter, h));
    mark("gate_up_proj");
    FLUXATTN_RETURN_IF_ERROR(ops_.swiglu(tmp, static_cast<char*>(tmp) + inter * bf, 2 * inter, act,
                                         n, static_cast<int32_t>(inter), s));
    mark("swiglu");
    FLUXATTN_RETURN_IF_ERROR(linear(act, L.down, L.down_bias, tmp, n, h, inter));
    mark("down_proj");
  }
  // The last residual add, then the final norm of the rows asked for and their logits.
  FLUXATTN_RETURN_IF_ERROR(ops_.add(x, tmp, x, n * h, s));
  if (all_positions) {
    FLUXATTN_RETURN_IF_ERROR(ops_.rms_norm(x, final_norm_, sel, n, hi, eps, 0.f, s));
  } else {
    FLUXATTN_RETURN_IF_ERROR(
        ops_.rms_norm_last_rows(x, d_q_indptr, num_seqs, final_norm_, sel, hi, eps, 0.f, s));
  }
  mark("final norm");
  FLUXATTN_RETURN_IF_ERROR(gemm_->Linear(sel, lm_head_, out_logits, nr, vocab, h, logits_type, s));
  mark("lm_head");
  if (profile_ != nullptr) profile_->End();
  *rows_out = nr;
  return static_cast<const float*>(out_logits);
}

}  // namespace

absl::StatusOr<std::unique_ptr<LanguageModel>> CreateCudaLanguageModel(
    ModelSpec spec, std::unique_ptr<WeightSource> weights, Device* device, int threads,
    DType compute) {
  if (device == nullptr || device->type() != DeviceType::kCuda) {
    return absl::InvalidArgumentError("CreateCudaLanguageModel: not a CUDA device");
  }
  if (compute != DType::kBF16 && compute != DType::kF32) {
    return InvalidInput("model dtype on cuda", "bf16 or f32", DTypeName(compute));
  }
  SetCpuThreads(threads);
  auto model =
      std::make_unique<CudaDecoderModel>(std::move(spec), std::move(weights), device, compute);
  FLUXATTN_RETURN_IF_ERROR(model->Load());
  return std::unique_ptr<LanguageModel>(std::move(model));
}

#endif  // FLUXATTN_WITH_CUDA

}  // namespace fluxattn::models
