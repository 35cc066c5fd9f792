// Router networks run on the model's device. A routing policy offers one network per layer in
// Prepare (RoutingSetup::offer_network); at prefill the engine then pools the layer's queries
// and runs the linears for every asking request of the batch in a few launches, and copies back
// only the network's outputs (a few floats per request) instead of the query rows.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "fluxattn/device.h"
#include "fluxattn/language_model.h"
#include "fluxattn/routing_policy.h"

namespace fluxattn {

class DeviceRouterNetworks {
 public:
  // Networks for a model with `num_layers` layers whose queries have `head_dim` columns, run on
  // `device` (a CUDA device).
  DeviceRouterNetworks(Device* device, int num_layers, int head_dim);
  ~DeviceRouterNetworks();

  // Whether networks of this model can run on the device (head_dim within the pooling
  // kernel's range); when not, offers are not asked for and the policy reads queries.
  static bool Supported(int head_dim);

  // Validates `network` (layer, pool_size, each linear's shape chaining from head_dim) and
  // copies its weights to the device as `policy`'s network for network.layer.
  absl::Status Offer(const RoutingPolicy* policy, const RouterNetwork& network);

  // Whether `policy` offered a network for `layer`.
  bool Has(const RoutingPolicy* policy, int layer) const;

  // Runs `policy`'s network of batch.layer for the sequences `rows` of the batch (each its
  // whole prompt) on the device's default stream and points inputs[i].network_outputs at its
  // outputs for rows[i] (host memory owned here, valid until the next call).
  absl::Status Run(const RoutingPolicy* policy, const LayerAttentionBatch& batch,
                   std::span<const SequenceRows* const> rows, std::span<RoutingInput> inputs);

 private:
  struct Linear;
  struct Network {
    int64_t pool_size = 0;
    std::vector<std::unique_ptr<Linear>> linears;
  };

  Device* device_;
  int num_layers_;
  int head_dim_;
  std::map<std::pair<const RoutingPolicy*, int>, Network> networks_;
  // Scratch: row ranges, pooling partials, two activation buffers; page-locked host memory
  // for the ranges and the outputs (copies from and to it start at once, without staging).
  DeviceBuffer ranges_, pool_scratch_, a_, b_;
  void* pinned_ = nullptr;
  size_t pinned_bytes_ = 0;
};

}  // namespace fluxattn
