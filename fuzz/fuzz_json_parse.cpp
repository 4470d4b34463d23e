// libFuzzer target: json_parse paths and their application. Input: a path, a newline, a JSON
// document. The path is parsed; when the document parses, the path is applied, and checked on a
// copy: both must give the same answer. Intake's Boost.JSON reading of the document must accept
// exactly what nlohmann::json does, and its check of the path give the same verdict. Errors come
// back as values; nothing throws, nothing recurses without bound.
#include <boost/json.hpp>
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
  if (!resendd::json_depth_within(doc_text)) return 0;
  auto doc = nlohmann::json::parse(doc_text, nullptr, false);
  // Intake reads with Boost.JSON what delivery reads with nlohmann::json: the same texts.
  if (resendd::accepted_as_delivery_would(doc_text) == doc.is_discarded()) __builtin_trap();
  std::string error;
  auto path = resendd::parse_json_path(path_text, &error);
  if (!path || doc.is_discarded()) return 0;
  {
    boost::json::monotonic_resource mr;
    auto fast = resendd::parse_as_delivery_would(doc_text, &mr);
    const std::vector<std::string> paths{std::string(path_text)};
    auto copy = doc;
    if (resendd::check_json_parse_boost(*fast, paths).has_value() !=
        resendd::apply_json_parse(copy, *path).has_value())
      __builtin_trap();
  }
  auto checked = doc;
  const auto answer = resendd::apply_json_parse(doc, *path);
  // Intake only checks (no tree for the targets); its answer must be delivery's, word for word.
  if (resendd::apply_json_parse(checked, *path, false) != answer) __builtin_trap();
  (void)doc.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  return 0;
}
