// The engine's store of router networks (engine/device_router.h): what an offered network must
// be, checked on the CPU device (the copies go through the Device interface either way), and
// that a batch the GPU path cannot take is refused rather than run.
#include "engine/device_router.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "fluxattn/device.h"

namespace fluxattn {
namespace {

class Dummy : public RoutingPolicy {
 public:
  absl::Status Prepare(const RoutingSetup&) override { return absl::OkStatus(); }
  absl::StatusOr<RoutingDecision> Decide(const RoutingInput&) override { return RoutingDecision{}; }
};

// A two-linear network 16 -> 24 -> 2.
struct Net {
  std::vector<float> w0 = std::vector<float>(24 * 16, 0.5f), b0 = std::vector<float>(24, 0.f);
  std::vector<float> w1 = std::vector<float>(2 * 24, 0.25f), b1 = std::vector<float>(2, 1.f);
  std::vector<RouterLinear> linears = {{w0.data(), b0.data(), 16, 24, true},
                                       {w1.data(), b1.data(), 24, 2, false}};
  RouterNetwork network(int layer) const {
    RouterNetwork n;
    n.layer = layer;
    n.pool_size = 100;
    n.linears = linears;
    return n;
  }
};

void ExpectError(const absl::Status& st, const std::string& field) {
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find(field), std::string::npos) << st;
}

TEST(DeviceRouterNetworks, AnOfferedNetworkMustChainFromTheHeadDim) {
  DeviceRouterNetworks store(CpuDevice(), /*num_layers=*/3, /*head_dim=*/16);
  Dummy a, b;
  Net net;
  ASSERT_TRUE(store.Offer(&a, net.network(1)).ok());
  EXPECT_TRUE(store.Has(&a, 1));
  EXPECT_FALSE(store.Has(&a, 0));
  EXPECT_FALSE(store.Has(&b, 1));
  ExpectError(store.Offer(&a, net.network(1)), "one network per layer");
  ExpectError(store.Offer(&a, net.network(3)), "layer");
  ExpectError(store.Offer(&a, net.network(-1)), "layer");

  RouterNetwork n = net.network(0);
  n.pool_size = 0;
  ExpectError(store.Offer(&a, n), "router network of layer 0: pool_size");
  n = net.network(0);
  n.struct_size = 4;
  ExpectError(store.Offer(&a, n), "struct_size");
  n = net.network(0);
  n.linears = {};
  ExpectError(store.Offer(&a, n), "linears");
  // The first linear must read head_dim values, each next one the last one's outputs.
  std::vector<RouterLinear> wrong = net.linears;
  wrong[0].in = 8;
  n = net.network(0);
  n.linears = wrong;
  ExpectError(store.Offer(&a, n), "linears[0]: expected in 16");
  wrong = net.linears;
  wrong[1].in = 23;
  n.linears = wrong;
  ExpectError(store.Offer(&a, n), "linears[1]: expected in 24");
  wrong = net.linears;
  wrong[1].bias = nullptr;
  n.linears = wrong;
  ExpectError(store.Offer(&a, n), "a null pointer");
  EXPECT_FALSE(store.Has(&a, 0));
  // Another policy's network for the same layer is its own.
  EXPECT_TRUE(store.Offer(&b, net.network(1)).ok());
  EXPECT_TRUE(store.Has(&b, 1));
}

TEST(DeviceRouterNetworks, OnlyBf16QueriesOnAGpuRunThere) {
  EXPECT_FALSE(DeviceRouterNetworks::Supported(256));
  EXPECT_FALSE(DeviceRouterNetworks::Supported(0));
  EXPECT_EQ(DeviceRouterNetworks::Supported(128), CudaCompiledIn());
  DeviceRouterNetworks store(CpuDevice(), 1, 16);
  Dummy a;
  Net net;
  ASSERT_TRUE(store.Offer(&a, net.network(0)).ok());
  std::vector<float> q(5 * 2 * 16, 1.f);
  LayerAttentionBatch batch;
  batch.layer = 0;
  batch.num_q_heads = 2;
  batch.head_dim = 16;
  SequenceRows rows{0, 5, 0};
  batch.seqs = std::span<const SequenceRows>(&rows, 1);
  batch.q_pre_rope = TensorView::Contiguous(q.data(), DType::kF32, DeviceType::kCpu, {5, 2, 16});
  const SequenceRows* asked[] = {&rows};
  RoutingInput input;
  EXPECT_FALSE(store.Run(&a, batch, asked, std::span<RoutingInput>(&input, 1)).ok());
  EXPECT_EQ(input.network_outputs, nullptr);
  // A layer without a network is an internal error, not a silent pass.
  batch.layer = 1;
  EXPECT_FALSE(store.Run(&a, batch, asked, std::span<RoutingInput>(&input, 1)).ok());
}

}  // namespace
}  // namespace fluxattn
