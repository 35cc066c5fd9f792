#include "eval/progress.h"

#include <unistd.h>

#include <cstdio>

#include "absl/strings/str_format.h"

namespace fluxattn::eval {

Progress::Progress(std::ostream& out, std::string title, int64_t total, bool interactive)
    : out_(out),
      title_(std::move(title)),
      total_(total),
      interactive_(interactive),
      start_(std::chrono::steady_clock::now()) {}

Progress::~Progress() { Finish(); }

void Progress::Next(const std::string& detail) {
  if (running_) ++done_;
  running_ = true;
  detail_ = detail;
  if (interactive_) {
    Draw();
  } else {
    out_ << title_ << " [" << done_ + 1 << "/" << total_ << "] " << detail << std::endl;
  }
}

void Progress::Finish() {
  if (finished_) return;
  finished_ = true;
  if (running_) ++done_;
  running_ = false;
  if (interactive_ && total_ > 0) {
    detail_ = "done";
    Draw();
    out_ << "\n" << std::flush;
  }
}

void Progress::Draw() {
  constexpr int kBar = 28;
  const double fraction = total_ > 0 ? static_cast<double>(done_) / total_ : 1.0;
  const int filled = static_cast<int>(fraction * kBar);
  const double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  std::string bar(filled, '#');
  bar += std::string(kBar - filled, '.');
  // \r + clear-to-end-of-line keeps a single line however long the previous detail was.
  out_ << "\r\033[K" << title_ << " [" << bar << "] " << done_ << "/" << total_ << " "
       << absl::StrFormat("%.0fs", elapsed) << "  " << detail_ << std::flush;
}

bool StderrIsTerminal() { return isatty(fileno(stderr)) != 0; }

}  // namespace fluxattn::eval
