// Error helpers. Every error that reaches a user names where (file, line, key, tensor or plugin
// path), what was expected and what was found, in one line.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace fluxattn {

// "<where>: expected <expected>, found <found>" as InvalidArgument.
absl::Status InvalidInput(absl::string_view where, absl::string_view expected,
                          absl::string_view found);

// Prefixes the message of a non-OK status with `where: `.
absl::Status Annotate(const absl::Status& status, absl::string_view where);

// `text` with control characters (newlines, tabs, ...) written as escapes (\n, \t, \x01), so
// that a message quoting user input stays one line.
std::string OneLine(absl::string_view text);

}  // namespace fluxattn

// Returns early with the status of `expr` when it is not OK.
#define FLUXATTN_RETURN_IF_ERROR(expr)       \
  do {                                       \
    ::absl::Status _fa_status = (expr);      \
    if (!_fa_status.ok()) return _fa_status; \
  } while (false)

#define FLUXATTN_CONCAT_INNER_(a, b) a##b
#define FLUXATTN_CONCAT_(a, b) FLUXATTN_CONCAT_INNER_(a, b)
// FLUXATTN_ASSIGN_OR_RETURN(auto x, StatusOrExpr());
#define FLUXATTN_ASSIGN_OR_RETURN(lhs, expr)                   \
  auto FLUXATTN_CONCAT_(_fa_statusor_, __LINE__) = (expr);     \
  if (!FLUXATTN_CONCAT_(_fa_statusor_, __LINE__).ok())         \
    return FLUXATTN_CONCAT_(_fa_statusor_, __LINE__).status(); \
  lhs = std::move(*FLUXATTN_CONCAT_(_fa_statusor_, __LINE__))

// Programmer-error check (never for user input): prints file, line and the condition, aborts.
#define FLUXATTN_CHECK(cond)                                                   \
  do {                                                                         \
    if (!(cond)) ::fluxattn::internal::CheckFailed(__FILE__, __LINE__, #cond); \
  } while (false)

namespace fluxattn::internal {
[[noreturn]] void CheckFailed(const char* file, int line, const char* condition);
}  // namespace fluxattn::internal
