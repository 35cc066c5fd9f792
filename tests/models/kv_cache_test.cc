// The KV page pool and the per-(request, layer) page tables over it: contents across page
// boundaries, release of what a backend no longer reads, exhaustion.
#include "fluxattn/kv_cache.h"

#include <gtest/gtest.h>

#include <random>
#include <set>

#include "fluxattn/kv_pool.h"

namespace fluxattn {
namespace {

TEST(LayerKvCache, AppendAcrossPagesAndRelease) {
  const int heads = 3, dim = 5, page = 4;
  auto pool = KvPagePool::Create(CpuDevice(), {DType::kF32, page, heads, dim, 16});
  ASSERT_TRUE(pool.ok()) << pool.status();
  LayerKvCache cache(pool->get());
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> u(-1, 1);
  std::vector<float> k_all, v_all;
  for (int64_t n : {3, 1, 6, 1, 1, 7}) {
    std::vector<float> k(n * heads * dim), v(n * heads * dim);
    for (auto& x : k) x = u(rng);
    for (auto& x : v) x = u(rng);
    ASSERT_TRUE(cache.Append(k.data(), v.data(), n).ok());
    k_all.insert(k_all.end(), k.begin(), k.end());
    v_all.insert(v_all.end(), v.begin(), v.end());
  }
  const int64_t length = 19;
  ASSERT_EQ(cache.length(), length);
  EXPECT_EQ(cache.pages_held(), 5);
  EXPECT_EQ(cache.bytes_held(), size_t{5} * 2 * page * heads * dim * sizeof(float));
  KvView view = cache.view();
  for (int64_t pos = 0; pos < length; ++pos) {
    for (int h = 0; h < heads; ++h) {
      for (int d = 0; d < dim; ++d) {
        ASSERT_EQ(view.key(pos, h)[d], k_all[(pos * heads + h) * dim + d]);
        ASSERT_EQ(view.value(pos, h)[d], v_all[(pos * heads + h) * dim + d]);
      }
    }
  }
  // Keep [0, 2) and [13, 19): pages 1 and 2 ([4, 12)) go; page 3 ([12, 16)) holds 13, 14, 15.
  cache.Release(KvRetention{2, 13});
  EXPECT_EQ(cache.pages_held(), 3);
  view = cache.view();
  EXPECT_TRUE(view.resident(1));
  EXPECT_FALSE(view.resident(4));
  EXPECT_FALSE(view.resident(11));
  EXPECT_TRUE(view.resident(12));
  EXPECT_EQ(view.key(14, 2)[4], k_all[(14 * heads + 2) * dim + 4]);
  // Appending continues after released pages.
  std::vector<float> k(heads * dim, 0.5f), v(heads * dim, -0.5f);
  ASSERT_TRUE(cache.Append(k.data(), v.data(), 1).ok());
  EXPECT_EQ(cache.view().value(19, 1)[0], -0.5f);
  // Keep-all retention releases nothing.
  cache.Release(KvRetention{});
  EXPECT_EQ(cache.pages_held(), 3);
  // Moving keeps the pages.
  LayerKvCache moved(std::move(cache));
  EXPECT_EQ(moved.pages_held(), 3);
  EXPECT_EQ(moved.length(), 20);
  EXPECT_EQ((*pool)->pages_used(), 3);
  moved.ReleaseAll();
  EXPECT_EQ((*pool)->pages_used(), 0);
}

TEST(KvPagePool, SharedByCachesAllOrNothingAndExhaustion) {
  auto pool = KvPagePool::Create(CpuDevice(), {DType::kF32, 8, 2, 4, 5});
  ASSERT_TRUE(pool.ok()) << pool.status();
  LayerKvCache a(pool->get()), b(pool->get());
  ASSERT_TRUE(a.Reserve(17).ok());  // 3 pages
  EXPECT_EQ((*pool)->pages_free(), 2);
  // b asks for 3 pages with 2 free: refused, and nothing taken.
  absl::Status st = b.Reserve(24);
  ASSERT_FALSE(st.ok());
  EXPECT_TRUE(absl::IsResourceExhausted(st)) << st;
  EXPECT_NE(st.message().find("needed 3 more pages of 8 tokens, found 2 free of 5"),
            std::string::npos)
      << st;
  EXPECT_EQ((*pool)->pages_free(), 2);
  EXPECT_EQ(b.pages_held(), 0);
  ASSERT_TRUE(b.Reserve(16).ok());
  // Distinct pages for distinct caches.
  std::set<int32_t> seen(a.pages().begin(), a.pages().end());
  for (int32_t p : b.pages()) EXPECT_TRUE(seen.insert(p).second) << "page " << p << " twice";
  EXPECT_EQ((*pool)->pages_free(), 0);
  // Pages come back when the cache goes.
  { LayerKvCache doomed(std::move(a)); }
  EXPECT_EQ((*pool)->pages_free(), 3);
}

TEST(KvPagePool, RefusesBadShapes) {
  EXPECT_FALSE(KvPagePool::Create(CpuDevice(), {DType::kF32, 0, 2, 4, 5}).ok());
  EXPECT_FALSE(KvPagePool::Create(CpuDevice(), {DType::kF32, 8, 2, 4, 0}).ok());
  EXPECT_FALSE(KvPagePool::Create(nullptr, {DType::kF32, 8, 2, 4, 5}).ok());
}

}  // namespace
}  // namespace fluxattn
