// Fuzz target: a Hugging Face config.json parsed into a model spec. Any input must give either a
// spec or one error line naming the file. An accepted spec must describe a model that could be
// allocated: positive sizes, heads that divide, and tensors whose element counts do not
// overflow (an absurd hidden_size must be refused here, not discovered at allocation).
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>

#include "absl/strings/str_cat.h"
#include "fluxattn/models/decoder_model.h"
#include "fluxattn/models/model_config.h"
#include "fuzz_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using fluxattn::fuzz::Fail;
  // The first line, when the input has one, is generation_config.json; the rest config.json.
  const std::string input(reinterpret_cast<const char*>(data), size);
  const size_t split = input.find('\n');
  const std::string generation = split == std::string::npos ? "" : input.substr(0, split);
  const std::string config = split == std::string::npos ? input : input.substr(split + 1);
  const std::string source = "fuzz/config.json";
  auto spec =
      fluxattn::models::ParseModelConfig(config, source, generation, "fuzz/generation_config.json");
  if (!spec.ok()) {
    fluxattn::fuzz::CheckUserError(spec.status(), "fuzz/");
    return 0;
  }
  const fluxattn::ModelInfo& info = spec->info;
  if (info.num_layers < 1 || info.hidden_size < 1 || info.num_q_heads < 1 ||
      info.num_kv_heads < 1 || info.head_dim < 2 || info.vocab_size < 1 ||
      spec->intermediate_size < 1) {
    Fail("accepted sizes are positive",
         absl::StrCat(info.num_layers, " ", info.hidden_size, " ", info.num_q_heads, " ",
                      info.num_kv_heads, " ", info.head_dim, " ", info.vocab_size));
  }
  if (info.num_q_heads % info.num_kv_heads != 0) Fail("kv heads divide q heads", "");
  // Every tensor the spec implies has a countable number of elements.
  for (const auto& tensor : fluxattn::models::ExpectedTensors(*spec)) {
    long double numel = 1;
    for (int64_t d : tensor.shape) {
      if (d < 1) Fail("expected tensor dimensions are positive", tensor.name);
      numel *= static_cast<long double>(d);
    }
    if (numel * 4 > static_cast<long double>(std::numeric_limits<int64_t>::max())) {
      Fail("expected tensors have a representable byte size", tensor.name);
    }
  }
  const auto frequencies = fluxattn::models::RopeInverseFrequencies(spec->rope, info.head_dim);
  if (frequencies.size() != static_cast<size_t>(info.head_dim / 2)) {
    Fail("one RoPE frequency per rotated pair", absl::StrCat(frequencies.size()));
  }
  return 0;
}
