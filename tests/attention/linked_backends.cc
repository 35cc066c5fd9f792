// The plugins' backend classes linked into the test binary directly.
#include "../../plugins/full/full_backend.h"
#include "../../plugins/quest/quest_backend.h"
#include "../../plugins/streaming/streaming_backend.h"
#include "../../plugins/triangle/triangle_backend.h"
#include "../../plugins/xattention/xattention_backend.h"
#include "backend_factory.h"

namespace fluxattn::testing {
namespace {

template <typename T>
BackendFactory FactoryOf() {
  return BackendFactory{
      [] { return T::Params(); },
      [](const ParamValues& params) -> absl::StatusOr<std::unique_ptr<AttentionBackend>> {
        absl::StatusOr<std::unique_ptr<T>> made = T::Create(params);
        if (!made.ok()) return made.status();
        return std::unique_ptr<AttentionBackend>(std::move(*made));
      }};
}

}  // namespace

const std::map<std::string, BackendFactory>& BackendFactories() {
  static const auto* factories = new std::map<std::string, BackendFactory>{
      {"full", FactoryOf<plugins::FullBackend>()},
      {"streaming", FactoryOf<plugins::StreamingBackend>()},
      {"xattention", FactoryOf<plugins::XAttentionBackend>()},
      {"quest", FactoryOf<plugins::QuestBackend>()},
      {"triangle", FactoryOf<plugins::TriangleBackend>()},
  };
  return *factories;
}

}  // namespace fluxattn::testing
