#pragma once
// The message of a captured exception, for logs and error values ("unknown error" for one that
// is not a std::exception). Never throws.
#include <exception>
#include <string>

namespace resendd {

inline std::string exception_message(const std::exception_ptr& e) noexcept {
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& ex) {
    return ex.what();
  } catch (...) {
    return "unknown error";
  }
}

}  // namespace resendd
