#include "serve/scheduler.h"

#include <algorithm>
#include <unordered_set>

#include "absl/strings/str_cat.h"

namespace fluxattn::serve {

bool RequestChannel::Wait(Clock::time_point deadline, RequestUpdate& out) {
  std::unique_lock<std::mutex> lock(mu_);
  if (!cv_.wait_until(lock, deadline, [&] { return has_news_; })) return false;
  out = std::move(news_);
  news_ = RequestUpdate();
  has_news_ = false;
  return true;
}

void RequestChannel::Deliver(std::vector<StepToken> tokens,
                             std::optional<GenerationResult> finished,
                             std::optional<absl::Status> failed) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    news_.tokens.insert(news_.tokens.end(), std::make_move_iterator(tokens.begin()),
                        std::make_move_iterator(tokens.end()));
    if (finished) news_.finished = std::move(finished);
    if (failed) news_.failed = std::move(failed);
    has_news_ = true;
  }
  cv_.notify_all();
}

Scheduler::Scheduler(Engine& engine, SchedulerLimits limits, Metrics& metrics)
    : engine_(engine), limits_(limits), metrics_(metrics) {}

Scheduler::~Scheduler() { Stop(); }

void Scheduler::Start() {
  PublishGauges();
  thread_ = std::thread([this] { Loop(); });
}

void Scheduler::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

absl::StatusOr<std::shared_ptr<RequestChannel>> Scheduler::Submit(RequestSpec spec) {
  auto channel = std::make_shared<RequestChannel>(std::move(spec));
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_) return absl::UnavailableError("the server is shutting down");
    if (static_cast<int>(waiting_.size()) >= limits_.max_queued) {
      return absl::ResourceExhaustedError(
          absl::StrCat("the queue is full (", limits_.max_queued,
                       " requests waiting; [server] max_queued_requests); retry later"));
    }
    waiting_.push_back(channel);
  }
  cv_.notify_all();
  return channel;
}

void Scheduler::Cancel(const std::shared_ptr<RequestChannel>& channel) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (channel->cancelled_) return;
    channel->cancelled_ = true;
    auto it = std::find(waiting_.begin(), waiting_.end(), channel);
    if (it != waiting_.end()) {
      waiting_.erase(it);
      return;
    }
    cancels_.push_back(channel);
  }
  cv_.notify_all();
}

// Pages the request may hold at most: every layer keeps prompt + max_new_tokens positions. The
// budget keeps the sum over the batch within the pool, so that a running request never fails
// for want of a page (backends that drop positions hold fewer).
int64_t Scheduler::PagesFor(const RequestSpec& spec) const {
  const int64_t positions =
      static_cast<int64_t>(spec.prompt.size()) + std::max(spec.options.max_new_tokens, 1);
  const int64_t per_layer = (positions + limits_.kv_page_tokens - 1) / limits_.kv_page_tokens;
  return per_layer * engine_.model().info().num_layers;
}

void Scheduler::PublishGauges() {
  EngineGauges g;
  {
    std::lock_guard<std::mutex> lock(mu_);
    g.queued = static_cast<int64_t>(waiting_.size());
  }
  g.queued += engine_.num_queued();
  g.running = engine_.num_running();
  g.kv_pages_used = engine_.kv_pages_used();
  g.kv_pages_total = engine_.kv_pages_total();
  metrics_.SetGauges(g);
}

void Scheduler::Loop() {
  while (true) {
    std::vector<std::shared_ptr<RequestChannel>> cancels;
    std::vector<std::shared_ptr<RequestChannel>> admit;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock,
               [&] { return stop_ || !cancels_.empty() || !waiting_.empty() || !engine_.idle(); });
      if (stop_) break;
      cancels.swap(cancels_);
      while (!waiting_.empty() &&
             static_cast<int>(running_.size() + admit.size()) < limits_.max_running) {
        const int64_t pages = PagesFor(waiting_.front()->spec());
        // The first request is always admitted into an empty batch (the engine then says
        // whether it fits at all).
        const bool empty = running_.empty() && admit.empty();
        if (!empty && kv_budget_used_ + pages > engine_.kv_pages_total()) break;
        waiting_.front()->kv_budget_pages_ = pages;
        kv_budget_used_ += pages;
        admit.push_back(std::move(waiting_.front()));
        waiting_.pop_front();
      }
    }
    for (const auto& c : cancels) {
      if (!c->in_engine_) continue;
      engine_.Cancel(c->engine_id_);
      running_.erase(c->engine_id_);
      kv_budget_used_ -= c->kv_budget_pages_;
      c->in_engine_ = false;
    }
    for (auto& c : admit) {
      bool cancelled;
      {
        std::lock_guard<std::mutex> lock(mu_);
        cancelled = c->cancelled_;
      }
      absl::StatusOr<uint64_t> id =
          cancelled ? absl::CancelledError("cancelled") : engine_.Add(c->spec_);
      if (!id.ok()) {
        kv_budget_used_ -= c->kv_budget_pages_;
        if (!cancelled) c->Deliver({}, std::nullopt, id.status());
        continue;
      }
      c->in_engine_ = true;
      c->engine_id_ = *id;
      running_[*id] = c;
    }
    if (!engine_.idle()) RunStep();
    PublishGauges();
  }
  FailAll(absl::UnavailableError("the server is shutting down"));
}

void Scheduler::FailAll(const absl::Status& status) {
  for (auto& [id, c] : running_) {
    engine_.Cancel(id);
    c->in_engine_ = false;
    c->Deliver({}, std::nullopt, status);
  }
  running_.clear();
  kv_budget_used_ = 0;
}

void Scheduler::RunStep() {
  absl::StatusOr<StepResult> step = engine_.Step();
  if (!step.ok()) {
    FailAll(step.status());
    return;
  }
  // Gauges first: a client that reads its tokens and then /metrics sees this step's state.
  PublishGauges();
  const Clock::time_point now = Clock::now();
  std::unordered_map<uint64_t, std::vector<StepToken>> tokens;
  for (StepToken& t : step->tokens) tokens[t.request_id].push_back(std::move(t));
  std::unordered_set<uint64_t> done;
  for (GenerationResult& r : step->finished) {
    auto it = running_.find(r.request_id);
    if (it == running_.end()) continue;
    metrics_.ObserveRouting(r.trace.routing, r.trace.sa_ratio);
    it->second->Deliver(std::move(tokens[r.request_id]), std::move(r), std::nullopt);
    done.insert(r.request_id);
  }
  for (const FailedRequest& f : step->failed) {
    auto it = running_.find(f.request_id);
    if (it == running_.end()) continue;
    it->second->Deliver({}, std::nullopt, f.status);
    done.insert(f.request_id);
  }
  for (auto& [id, toks] : tokens) {
    auto it = running_.find(id);
    if (it == running_.end()) continue;
    RequestChannel& c = *it->second;
    if (!c.got_token_) {
      metrics_.ObserveTimeToFirstToken(std::chrono::duration<double>(now - c.arrival_).count());
      c.got_token_ = true;
    } else {
      metrics_.ObserveInterTokenLatency(std::chrono::duration<double>(now - c.last_token_).count());
    }
    c.last_token_ = now;
    if (!done.count(id)) c.Deliver(std::move(toks), std::nullopt, std::nullopt);
  }
  for (uint64_t id : done) {
    auto it = running_.find(id);
    kv_budget_used_ -= it->second->kv_budget_pages_;
    it->second->in_engine_ = false;
    running_.erase(it);
  }
  metrics_.ObserveStep(static_cast<int>(tokens.size() + step->failed.size()), step->prefill_tokens,
                       step->seconds);
  // Nothing ran and nothing is running: the queued requests can never fit in the KV pool.
  if (step->tokens.empty() && step->failed.empty() && engine_.num_running() == 0) {
    std::vector<uint64_t> stuck;
    for (auto& [id, c] : running_) stuck.push_back(id);
    for (uint64_t id : stuck) {
      engine_.Cancel(id);
      running_[id]->Deliver({}, std::nullopt,
                            absl::ResourceExhaustedError("the prompt does not fit in the KV pool"));
      kv_budget_used_ -= running_[id]->kv_budget_pages_;
      running_[id]->in_engine_ = false;
      running_.erase(id);
    }
  }
}

}  // namespace fluxattn::serve
