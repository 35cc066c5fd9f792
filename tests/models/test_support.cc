#include "test_support.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"

namespace fluxattn::testing {

KvRetention NaiveAttention::RetainedKv(int64_t next_query_pos) const {
  if (window_ <= 0) return KvRetention{};
  return KvRetention{sink_, std::max<int64_t>(0, next_query_pos - window_ + 1)};
}

absl::Status NaiveAttention::BuildLayout(const AttentionProblem&, BlockSparseLayout*) {
  return absl::OkStatus();
}

absl::Status NaiveAttention::Run(const AttentionBatch& batch, const PlannedLayout&,
                                 AttentionWorkspace*) {
  for (const AttentionProblem& p : batch.seqs) {
    absl::Status st =
        RunOne(p, batch.out.as<float>() + p.q_row0 * int64_t{p.num_q_heads} * p.head_dim);
    if (!st.ok()) return st;
  }
  return absl::OkStatus();
}

absl::Status NaiveAttention::RunOne(const AttentionProblem& p, float* out) {
  ++calls;
  const int group = p.num_q_heads / p.num_kv_heads;
  std::vector<double> scores;
  for (int64_t r = 0; r < p.num_queries; ++r) {
    const int64_t pos = p.q_pos0 + r;
    for (int h = 0; h < p.num_q_heads; ++h) {
      const float* q = p.host_q() + (r * p.num_q_heads + h) * p.head_dim;
      const int kvh = h / group;
      scores.assign(pos + 1, -INFINITY);
      double max_score = -INFINITY;
      for (int64_t j = 0; j <= pos; ++j) {
        if (window_ > 0 && j >= sink_ && pos - j >= window_) continue;
        const float* k = p.kv.key(j, kvh);
        if (k == nullptr) return absl::InternalError(absl::StrCat("key ", j, " was released"));
        double s = 0;
        for (int d = 0; d < p.head_dim; ++d) s += static_cast<double>(q[d]) * k[d];
        scores[j] = s * p.scale;
        max_score = std::max(max_score, scores[j]);
      }
      std::vector<double> acc(p.head_dim, 0.0);
      double total = 0;
      for (int64_t j = 0; j <= pos; ++j) {
        if (scores[j] == -INFINITY) continue;
        const double w = std::exp(scores[j] - max_score);
        total += w;
        const float* v = p.kv.value(j, kvh);
        for (int d = 0; d < p.head_dim; ++d) acc[d] += w * v[d];
      }
      float* o = out + (r * p.num_q_heads + h) * p.head_dim;
      for (int d = 0; d < p.head_dim; ++d) o[d] = static_cast<float>(acc[d] / total);
    }
  }
  return absl::OkStatus();
}

namespace {
void DeleteBackend(void* p) noexcept { delete static_cast<AttentionBackend*>(p); }
void DeletePolicy(void* p) noexcept { delete static_cast<RoutingPolicy*>(p); }
}  // namespace

PluginPtr<AttentionBackend> Own(AttentionBackend* backend) {
  return PluginPtr<AttentionBackend>(
      backend, PluginObjectDeleter<AttentionBackend>{nullptr, &DeleteBackend});
}

PluginPtr<RoutingPolicy> Own(RoutingPolicy* policy) {
  return PluginPtr<RoutingPolicy>(policy,
                                  PluginObjectDeleter<RoutingPolicy>{nullptr, &DeletePolicy});
}

Composition NaiveComposition() {
  Composition c;
  c.backends["full"] = Own(new NaiveAttention());
  c.full_backend = "full";
  return c;
}

std::string FixturePath(const std::string& name) {
  return absl::StrCat(FLUXATTN_MODEL_FIXTURES, "/", name);
}

nlohmann::json ReadJson(const std::string& path) {
  std::ifstream in(path);
  return nlohmann::json::parse(in);
}

std::vector<std::string> FixtureNames() {
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(FLUXATTN_MODEL_FIXTURES)) {
    if (std::filesystem::exists(e.path() / "reference.json")) {
      names.push_back(e.path().filename().string());
    }
  }
  std::sort(names.begin(), names.end());
  return names;
}

std::string TempDir(const std::string& name) {
  const char* base = std::getenv("TEST_TMPDIR");
  std::filesystem::path dir = std::filesystem::path(base ? base : "/tmp") /
                              absl::StrCat("fluxattn_models_", ::getpid(), "_", name);
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir.string();
}

void WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

double RelativeError(const std::vector<float>& a, const std::vector<double>& b) {
  double diff = 0, scale = 0;
  for (size_t i = 0; i < b.size(); ++i) {
    diff = std::max(diff, std::abs(static_cast<double>(a[i]) - b[i]));
    scale = std::max(scale, std::abs(b[i]));
  }
  return diff / scale;
}

}  // namespace fluxattn::testing
