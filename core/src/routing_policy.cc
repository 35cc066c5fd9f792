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
