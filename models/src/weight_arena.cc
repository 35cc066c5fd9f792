#include "weight_arena.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "fluxattn/env_switch.h"
#include "fluxattn/status.h"

namespace fluxattn::models {

namespace {
constexpr size_t kHuge = size_t{2} << 20;

#if !defined(MADV_PAGEOUT)
constexpr int kMadvPageout = 21;  // Linux 5.4 and later
#else
constexpr int kMadvPageout = MADV_PAGEOUT;
#endif
}  // namespace

WeightArena::~WeightArena() {
  if (base_ != nullptr) ::munmap(base_, size_);
}

absl::StatusOr<bool> WeightArena::Wanted() { return EnvSwitch("FLUXATTN_CPU_HUGEPAGES", false); }

absl::Status WeightArena::Reserve(size_t bytes) {
  if (base_ != nullptr) return absl::InternalError("WeightArena: reserved twice");
  const size_t size = (bytes + kHuge - 1) / kHuge * kHuge;
  if (size == 0) return absl::OkStatus();
  // One huge page more than asked, so that the start can be moved to a 2 MiB boundary.
  const size_t mapped = size + kHuge;
  void* p = ::mmap(nullptr, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "CPU weights: mmap of ", mapped, " bytes: expected success, found ", std::strerror(errno)));
  }
  const uintptr_t start = reinterpret_cast<uintptr_t>(p);
  const uintptr_t aligned = (start + kHuge - 1) / kHuge * kHuge;
  if (aligned > start) ::munmap(p, aligned - start);
  const uintptr_t end = aligned + size;
  if (start + mapped > end) ::munmap(reinterpret_cast<void*>(end), start + mapped - end);
  base_ = reinterpret_cast<void*>(aligned);
  size_ = size;
  // Without transparent huge pages (the kernel's setting "never", or no support) the arena still
  // works on small pages.
  ::madvise(base_, size_, MADV_HUGEPAGE);
  return absl::OkStatus();
}

void* WeightArena::Take(size_t bytes) {
  const size_t rounded = (bytes + kAlign - 1) / kAlign * kAlign;
  if (base_ == nullptr || used_ + rounded > size_) return nullptr;
  void* p = static_cast<char*>(base_) + used_;
  used_ += rounded;
  return p;
}

int64_t WeightArena::HugeBytes() const {
  if (base_ == nullptr) return 0;
  std::ifstream smaps("/proc/self/smaps");
  if (!smaps) return -1;
  const uintptr_t lo = reinterpret_cast<uintptr_t>(base_), hi = lo + size_;
  std::string line;
  bool inside = false;
  int64_t kib = 0;
  while (std::getline(smaps, line)) {
    unsigned long long a = 0, b = 0;
    // A mapping's first line: "start-end perms ..." in hexadecimal.
    if (std::sscanf(line.c_str(), "%llx-%llx ", &a, &b) == 2 && line.find(':') > 8) {
      inside = a < hi && b > lo;
      continue;
    }
    if (inside && line.rfind("AnonHugePages:", 0) == 0) {
      std::istringstream in(line.substr(14));
      int64_t v = 0;
      if (in >> v) kib += v;
    }
  }
  return kib * 1024;
}

void WeightArena::PageOut(const void* p, size_t bytes) {
  const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  const uintptr_t lo = (reinterpret_cast<uintptr_t>(p) + page - 1) / page * page;
  const uintptr_t hi = (reinterpret_cast<uintptr_t>(p) + bytes) / page * page;
  if (hi > lo) ::madvise(reinterpret_cast<void*>(lo), hi - lo, kMadvPageout);
}

}  // namespace fluxattn::models
