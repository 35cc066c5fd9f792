#include "fluxattn/thread_pool.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace fluxattn {
namespace {

void CpuRelax() {
#if defined(__x86_64__)
  _mm_pause();
#else
  std::this_thread::yield();
#endif
}

int ResolveThreads(int requested) {
  if (requested > 0) return requested;
  return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

// Spin iterations (of one pause each, 10-40 ns; about 0.1 ms in all) before a waiting thread
// sleeps: a decode step hands out a few hundred short jobs, and a condition-variable wake-up per
// job would cost more than the jobs themselves.
constexpr int kSpinIterations = 4000;

thread_local bool in_job = false;

}  // namespace

// Workers wait for a new job generation (spinning briefly, then on a condition variable), claim
// indices with an atomic counter, and report completion by decrementing `pending_`.
class ThreadPool::Impl {
 public:
  explicit Impl(int threads) : size_(ResolveThreads(threads)) {
    for (int i = 1; i < size_; ++i) workers_.emplace_back([this] { WorkerLoop(); });
  }
  ~Impl() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_.store(true);
      generation_.fetch_add(1);
    }
    wake_.notify_all();
    for (std::thread& t : workers_) t.join();
  }

  int size() const { return size_; }

  void Run(int64_t n, const std::function<void(int64_t)>& fn) {
    if (n <= 0) return;
    if (n == 1 || size_ == 1 || in_job) {
      for (int64_t i = 0; i < n; ++i) fn(i);
      return;
    }
    std::lock_guard<std::mutex> run_lock(run_mu_);
    fn_ = &fn;
    n_ = n;
    next_.store(0, std::memory_order_relaxed);
    pending_.store(static_cast<int>(workers_.size()), std::memory_order_relaxed);
    {
      std::lock_guard<std::mutex> lock(mu_);
      generation_.fetch_add(1, std::memory_order_release);
    }
    wake_.notify_all();
    Drain();
    for (int spin = 0; pending_.load(std::memory_order_acquire) != 0; ++spin) {
      if (spin < kSpinIterations) {
        CpuRelax();
        continue;
      }
      std::unique_lock<std::mutex> lock(mu_);
      done_.wait(lock, [this] { return pending_.load(std::memory_order_acquire) == 0; });
    }
    fn_ = nullptr;
  }

 private:
  void Drain() {
    in_job = true;
    for (int64_t i = next_.fetch_add(1, std::memory_order_relaxed); i < n_;
         i = next_.fetch_add(1, std::memory_order_relaxed)) {
      (*fn_)(i);
    }
    in_job = false;
  }

  void WorkerLoop() {
    uint64_t seen = 0;
    while (true) {
      for (int spin = 0; generation_.load(std::memory_order_acquire) == seen; ++spin) {
        if (spin < kSpinIterations) {
          CpuRelax();
          continue;
        }
        std::unique_lock<std::mutex> lock(mu_);
        wake_.wait(lock, [&] { return generation_.load(std::memory_order_acquire) != seen; });
      }
      seen = generation_.load(std::memory_order_acquire);
      if (stop_.load()) return;
      Drain();
      if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
        std::lock_guard<std::mutex> lock(mu_);
        done_.notify_one();
      }
    }
  }

  const int size_;
  std::vector<std::thread> workers_;
  std::mutex run_mu_;  // one job at a time
  std::mutex mu_;
  std::condition_variable wake_;
  std::condition_variable done_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<bool> stop_{false};
  const std::function<void(int64_t)>* fn_ = nullptr;
  int64_t n_ = 0;
  std::atomic<int64_t> next_{0};
  std::atomic<int> pending_{0};
};

ThreadPool::ThreadPool(int threads) : impl_(std::make_unique<Impl>(threads)) {}
ThreadPool::~ThreadPool() = default;

int ThreadPool::size() const { return impl_->size(); }

void ThreadPool::ParallelFor(int64_t n, const std::function<void(int64_t)>& fn) {
  impl_->Run(n, fn);
}

void ThreadPool::ParallelForRanges(int64_t n, int64_t align,
                                   const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  align = std::max<int64_t>(align, 1);
  const int64_t units = (n + align - 1) / align;
  const int64_t parts = std::min<int64_t>(units, size());
  const int64_t per = units / parts, extra = units % parts;
  impl_->Run(parts, [&](int64_t i) {
    const int64_t u0 = i * per + std::min(i, extra);
    const int64_t u1 = u0 + per + (i < extra ? 1 : 0);
    fn(std::min(n, u0 * align), std::min(n, u1 * align));
  });
}

namespace {

std::mutex& GlobalMutex() {
  static std::mutex mutex;
  return mutex;
}
int requested_threads = 0;
ThreadPool* global_pool = nullptr;  // lives until exit, like the CPU device

}  // namespace

void SetCpuThreads(int threads) {
  std::lock_guard<std::mutex> lock(GlobalMutex());
  requested_threads = std::max(0, threads);
  if (global_pool != nullptr && global_pool->size() != ResolveThreads(requested_threads)) {
    delete global_pool;
    global_pool = nullptr;
  }
}

int CpuThreads() {
  std::lock_guard<std::mutex> lock(GlobalMutex());
  return global_pool != nullptr ? global_pool->size() : ResolveThreads(requested_threads);
}

// Inside a job every call runs serially (and must not take the lock its caller holds).
void CpuParallelFor(int64_t n, const std::function<void(int64_t)>& fn) {
  if (in_job || n <= 1) {
    for (int64_t i = 0; i < n; ++i) fn(i);
    return;
  }
  std::lock_guard<std::mutex> lock(GlobalMutex());
  if (global_pool == nullptr) global_pool = new ThreadPool(requested_threads);
  global_pool->ParallelFor(n, fn);
}

void CpuParallelForRanges(int64_t n, int64_t align,
                          const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  if (in_job) {
    fn(0, n);
    return;
  }
  std::lock_guard<std::mutex> lock(GlobalMutex());
  if (global_pool == nullptr) global_pool = new ThreadPool(requested_threads);
  global_pool->ParallelForRanges(n, align, fn);
}

}  // namespace fluxattn
