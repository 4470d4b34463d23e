#include "queue/json_path.h"

#include <charconv>
#include <nlohmann/json.hpp>

#include "util/utf8.h"

namespace resendd {
namespace {

constexpr std::size_t max_steps = 64;

bool is_name_char(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' ||
         static_cast<unsigned char>(c) >= 0x80;
}

// Parses a quoted key starting at s[i] (the quote); leaves i after the closing quote.
std::optional<std::string> quoted(std::string_view s, std::size_t& i) {
  const char q = s[i++];
  std::string out;
  while (i < s.size() && s[i] != q) {
    if (s[i] == '\\' && i + 1 < s.size()) ++i;
    out.push_back(s[i++]);
  }
  if (i >= s.size()) return std::nullopt;
  ++i;
  return out;
}

std::string describe(const json_path::step& st) {
  if (auto* k = std::get_if<std::string>(&st)) return "." + *k;
  if (auto* n = std::get_if<std::size_t>(&st)) return "[" + std::to_string(*n) + "]";
  return "[*]";
}

}  // namespace

std::optional<json_path> parse_json_path(std::string_view s, std::string* error) {
  const auto fail = [&](std::string why) -> std::optional<json_path> {
    if (error) *error = "bad path \"" + std::string(utf8_prefix(s, 200)) + "\": " + why;
    return std::nullopt;
  };
  if (s.empty() || s[0] != '$') return fail("must start with $");
  json_path p;
  p.text = std::string(s);
  std::size_t i = 1;
  while (i < s.size()) {
    if (p.steps.size() >= max_steps) return fail("more than 64 steps");
    if (s[i] == '.') {
      ++i;
      if (i < s.size() && s[i] == '*') {
        p.steps.emplace_back(json_path::wildcard{});
        ++i;
        continue;
      }
      const auto start = i;
      while (i < s.size() && is_name_char(s[i])) ++i;
      if (i == start) return fail("expected a name after '.' at offset " + std::to_string(start));
      p.steps.emplace_back(std::string(s.substr(start, i - start)));
    } else if (s[i] == '[') {
      ++i;
      if (i >= s.size()) return fail("unclosed [");
      if (s[i] == '*') {
        p.steps.emplace_back(json_path::wildcard{});
        ++i;
      } else if (s[i] == '\'' || s[i] == '"') {
        auto key = quoted(s, i);
        if (!key) return fail("unclosed quote");
        p.steps.emplace_back(std::move(*key));
      } else {
        std::size_t n = 0;
        auto r = std::from_chars(s.data() + i, s.data() + s.size(), n);
        if (r.ec != std::errc{}) return fail("expected an index, a quoted name or * inside []");
        i = std::size_t(r.ptr - s.data());
        p.steps.emplace_back(n);
      }
      if (i >= s.size() || s[i] != ']') return fail("expected ] at offset " + std::to_string(i));
      ++i;
    } else {
      return fail("unexpected '" + std::string(utf8_char_at(s, i)) + "' at offset " +
                  std::to_string(i));
    }
  }
  return p;
}

std::optional<std::string> apply_json_parse(nlohmann::json& doc, const json_path& path,
                                            bool replace) {
  std::vector<nlohmann::json*> current{&doc};
  std::string walked = "$";
  for (const auto& st : path.steps) {
    std::vector<nlohmann::json*> next;
    walked += describe(st);
    for (auto* node : current) {
      if (auto* key = std::get_if<std::string>(&st)) {
        if (!node->is_object() || !node->contains(*key))
          return "path " + path.text + ": nothing at " + walked;
        next.push_back(&(*node)[*key]);
      } else if (auto* idx = std::get_if<std::size_t>(&st)) {
        if (!node->is_array() || *idx >= node->size())
          return "path " + path.text + ": nothing at " + walked;
        next.push_back(&(*node)[*idx]);
      } else {
        if (!node->is_array() && !node->is_object())
          return "path " + path.text + ": " + walked + " is not an array or object";
        for (auto& child : *node) next.push_back(&child);
      }
    }
    current = std::move(next);
  }
  for (auto* node : current) {
    if (!node->is_string()) return "path " + path.text + ": target is not a string";
    const auto& text = node->get_ref<const std::string&>();
    if (!json_depth_within(text)) return "path " + path.text + ": target nests too deeply";
    if (!replace) {
      // The same parser without the document: no tree built and thrown away.
      if (!nlohmann::json::accept(text)) return "path " + path.text + ": target is not valid JSON";
      continue;
    }
    auto parsed = nlohmann::json::parse(text, nullptr, false);
    if (parsed.is_discarded()) return "path " + path.text + ": target is not valid JSON";
    *node = std::move(parsed);
  }
  return std::nullopt;
}

namespace {

std::optional<std::string> apply_all(nlohmann::json& doc, const std::vector<std::string>& paths,
                                     bool replace_last) {
  for (std::size_t i = 0; i < paths.size(); ++i) {
    std::string err;
    auto p = parse_json_path(paths[i], &err);
    if (!p) return err;
    if (auto e = apply_json_parse(doc, *p, replace_last || i + 1 < paths.size())) return e;
  }
  return std::nullopt;
}

}  // namespace

std::optional<std::string> apply_json_parse(nlohmann::json& doc,
                                            const std::vector<std::string>& paths) {
  return apply_all(doc, paths, true);
}

std::optional<std::string> check_json_parse(nlohmann::json& doc,
                                            const std::vector<std::string>& paths) {
  return apply_all(doc, paths, false);
}

}  // namespace resendd
