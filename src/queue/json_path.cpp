#include "queue/json_path.h"

#include <algorithm>
#include <boost/json.hpp>
#include <charconv>
#include <cmath>
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
  if (auto* n = std::get_if<std::size_t>(&st)) {
    std::string out = "[";  // appended, not "[" + ... + "]": GCC 12 -O3 warns (-Wrestrict)
    out += std::to_string(*n);
    out += ']';
    return out;
  }
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

namespace {

// What a path walk needs of a JSON library; one walk (below) serves both.
struct nlohmann_ops {
  using value = nlohmann::json;
  static value* member(value& v, const std::string& key) {
    if (!v.is_object()) return nullptr;
    const auto it = v.find(key);
    return it == v.end() ? nullptr : &*it;
  }
  static value* element(value& v, std::size_t i) {
    return v.is_array() && i < v.size() ? &v[i] : nullptr;
  }
  static bool container(const value& v) { return v.is_array() || v.is_object(); }
  template <class F>
  static void children(value& v, F&& f) {
    for (auto& child : v) f(child);
  }
  static std::optional<std::string_view> text(const value& v) {
    if (!v.is_string()) return std::nullopt;
    return v.get_ref<const std::string&>();
  }
  // The same parser without the document: no tree built and thrown away.
  static bool accept(std::string_view t) { return nlohmann::json::accept(t); }
  static bool replace(value& v, std::string_view t) {
    auto parsed = nlohmann::json::parse(t, nullptr, false);
    if (parsed.is_discarded()) return false;
    v = std::move(parsed);
    return true;
  }
};

struct boost_ops {
  using value = boost::json::value;
  static value* member(value& v, const std::string& key) {
    auto* o = v.if_object();
    return o ? o->if_contains(key) : nullptr;
  }
  static value* element(value& v, std::size_t i) {
    auto* a = v.if_array();
    return a && i < a->size() ? &(*a)[i] : nullptr;
  }
  static bool container(const value& v) { return v.is_array() || v.is_object(); }
  template <class F>
  static void children(value& v, F&& f) {
    if (auto* a = v.if_array())
      for (auto& child : *a) f(child);
    else if (auto* o = v.if_object())
      for (auto& member : *o) f(member.value());
  }
  static std::optional<std::string_view> text(const value& v) {
    if (const auto* s = v.if_string()) return std::string_view(*s);
    return std::nullopt;
  }
  static bool accept(std::string_view t) { return accepted_as_delivery_would(t); }
  static bool replace(value& v, std::string_view t) {
    auto parsed = parse_as_delivery_would(t, v.storage().get());
    if (!parsed) return false;
    v = std::move(*parsed);
    return true;
  }
};

template <class Ops>
std::optional<std::string> walk(typename Ops::value& doc, const json_path& path, bool replace) {
  using value = typename Ops::value;
  std::vector<value*> current{&doc};
  std::string walked = "$";
  for (const auto& st : path.steps) {
    std::vector<value*> next;
    walked += describe(st);
    for (auto* node : current) {
      if (auto* key = std::get_if<std::string>(&st)) {
        auto* child = Ops::member(*node, *key);
        if (!child) return "path " + path.text + ": nothing at " + walked;
        next.push_back(child);
      } else if (auto* idx = std::get_if<std::size_t>(&st)) {
        auto* child = Ops::element(*node, *idx);
        if (!child) return "path " + path.text + ": nothing at " + walked;
        next.push_back(child);
      } else {
        if (!Ops::container(*node))
          return "path " + path.text + ": " + walked + " is not an array or object";
        Ops::children(*node, [&next](value& child) { next.push_back(&child); });
      }
    }
    current = std::move(next);
  }
  for (auto* node : current) {
    const auto text = Ops::text(*node);
    if (!text) return "path " + path.text + ": target is not a string";
    if (!json_depth_within(*text)) return "path " + path.text + ": target nests too deeply";
    if (!(replace ? Ops::replace(*node, *text) : Ops::accept(*text)))
      return "path " + path.text + ": target is not valid JSON";
  }
  return std::nullopt;
}

template <class Ops>
std::optional<std::string> apply_all(typename Ops::value& doc,
                                     const std::vector<std::string>& paths, bool replace_last) {
  for (std::size_t i = 0; i < paths.size(); ++i) {
    std::string err;
    auto p = parse_json_path(paths[i], &err);
    if (!p) return err;
    if (auto e = walk<Ops>(doc, *p, replace_last || i + 1 < paths.size())) return e;
  }
  return std::nullopt;
}

// Every number a double can hold (Boost.JSON reads 1e400 as infinity; nlohmann refuses it).
bool finite_numbers(const boost::json::value& v, int depth = 0) {
  if (depth > 2 * int(max_json_depth)) return false;  // bounded twice over by json_depth_within
  if (const auto* d = v.if_double()) return std::isfinite(*d);
  if (const auto* a = v.if_array())
    return std::all_of(a->begin(), a->end(),
                       [depth](const auto& c) { return finite_numbers(c, depth + 1); });
  if (const auto* o = v.if_object())
    return std::all_of(o->begin(), o->end(),
                       [depth](const auto& m) { return finite_numbers(m.value(), depth + 1); });
  return true;
}

}  // namespace

std::optional<std::string> apply_json_parse(nlohmann::json& doc, const json_path& path,
                                            bool replace) {
  return walk<nlohmann_ops>(doc, path, replace);
}

std::optional<std::string> apply_json_parse(nlohmann::json& doc,
                                            const std::vector<std::string>& paths) {
  return apply_all<nlohmann_ops>(doc, paths, true);
}

std::optional<std::string> check_json_parse(nlohmann::json& doc,
                                            const std::vector<std::string>& paths) {
  return apply_all<nlohmann_ops>(doc, paths, false);
}

std::optional<std::string> check_json_parse_boost(boost::json::value& doc,
                                                  const std::vector<std::string>& paths) {
  return apply_all<boost_ops>(doc, paths, false);
}

std::optional<boost::json::value> parse_as_delivery_would(
    std::string_view text, boost::container::pmr::memory_resource* mr) {
  const auto whole = text;
  text = text.substr(0, text.find('\0'));  // nlohmann's lexer reads a NUL as the end
  if (text.starts_with("\xEF\xBB\xBF")) text.remove_prefix(3);
  boost::json::parse_options opts;
  opts.max_depth = 4 * max_json_depth;  // json_depth_within is the limit; this one never bites
  boost::system::error_code ec;
  auto v = boost::json::parse(text, ec, boost::json::storage_ptr(mr), opts);
  if (!ec && finite_numbers(v)) return v;
  // Refused, or a number that is not finite: nlohmann::json has the last word (it refuses 1e400,
  // reads 0e5555 as 0 where Boost.JSON makes it infinite, and 0e99999999999999999999 where
  // Boost.JSON calls it an exponent overflow). Rare, so the slow way: its rendering, read again.
  const auto n = nlohmann::json::parse(whole, nullptr, false);
  if (n.is_discarded()) return std::nullopt;
  v = boost::json::parse(n.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace), ec,
                         boost::json::storage_ptr(mr), opts);
  if (ec) return std::nullopt;
  return v;
}

bool accepted_as_delivery_would(std::string_view text) {
  unsigned char buf[4096];
  boost::json::monotonic_resource mr(buf, sizeof buf);
  return parse_as_delivery_would(text, &mr).has_value();
}

}  // namespace resendd
