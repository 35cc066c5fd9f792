#include "fluxattn/routing_policy.h"

namespace fluxattn {

const char* AttentionChoiceName(AttentionChoice choice) {
  switch (choice) {
    case AttentionChoice::kFull:
      return "full";
    case AttentionChoice::kSparse:
      return "sparse";
  }
  return "unknown";
}

}  // namespace fluxattn

namespace fluxattn {

absl::Status RoutingPolicy::DecideBatch(const RoutingBatch& batch,
                                        std::vector<RoutingDecision>* decisions) {
  decisions->clear();
  decisions->reserve(batch.requests.size());
  for (const RoutingInput& input : batch.requests) {
    absl::StatusOr<RoutingDecision> decision = Decide(input);
    if (!decision.ok()) return decision.status();
    decisions->push_back(*std::move(decision));
  }
  return absl::OkStatus();
}

}  // namespace fluxattn
