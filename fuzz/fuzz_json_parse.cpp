// libFuzzer target: json_parse paths and their application. Input: a path, a newline, a JSON
// document. The path is parsed; when the document parses, the path is applied, and checked on a
// copy: both must give the same answer. Errors come back as values; nothing throws, nothing
// recurses without bound.
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "queue/json_path.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view all(reinterpret_cast<const char*>(data), size);
  const auto nl = all.find('\n');
  const auto path_text = all.substr(0, nl);
  const auto doc_text = nl == std::string_view::npos ? std::string_view() : all.substr(nl + 1);
  std::string error;
  auto path = resendd::parse_json_path(path_text, &error);
  if (!path || !resendd::json_depth_within(doc_text)) return 0;
  auto doc = nlohmann::json::parse(doc_text, nullptr, false);
  if (doc.is_discarded()) return 0;
  auto checked = doc;
  const auto answer = resendd::apply_json_parse(doc, *path);
  // Intake only checks (no tree for the targets); its answer must be delivery's, word for word.
  if (resendd::apply_json_parse(checked, *path, false) != answer) __builtin_trap();
  (void)doc.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  return 0;
}
