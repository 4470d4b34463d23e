#include "queue/forward.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "queue/json_path.h"
#include "util/json_depth.h"

namespace resendd {
namespace {

using nlohmann::json;

// One value of the document: its kind and the bytes it spans. Containers list their children
// (objects with their decoded keys, in document order, duplicates kept).
struct node {
  enum class kind { object, array, string, scalar } k = kind::scalar;
  std::size_t begin = 0, end = 0;
  std::vector<std::size_t> kids;  // indexes into the node list
  std::vector<std::string> keys;  // objects: kids[i]'s key
};

// Decodes the JSON string token s[begin, end) (quotes included) into UTF-8. False on anything
// that is not a valid string.
bool decode_string(std::string_view s, std::size_t begin, std::size_t end, std::string& out) {
  out.clear();
  if (end - begin < 2 || s[begin] != '"' || s[end - 1] != '"') return false;
  auto hex4 = [&](std::size_t at, unsigned& v) {
    if (at + 4 > end - 1) return false;
    v = 0;
    for (std::size_t i = at; i < at + 4; ++i) {
      const char c = s[i];
      v <<= 4;
      if (c >= '0' && c <= '9') v |= unsigned(c - '0');
      else if (c >= 'a' && c <= 'f') v |= unsigned(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F') v |= unsigned(c - 'A' + 10);
      else return false;
    }
    return true;
  };
  auto put_utf8 = [&](unsigned cp) {
    if (cp < 0x80) {
      out += char(cp);
    } else if (cp < 0x800) {
      out += char(0xC0 | (cp >> 6));
      out += char(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      out += char(0xE0 | (cp >> 12));
      out += char(0x80 | ((cp >> 6) & 0x3F));
      out += char(0x80 | (cp & 0x3F));
    } else {
      out += char(0xF0 | (cp >> 18));
      out += char(0x80 | ((cp >> 12) & 0x3F));
      out += char(0x80 | ((cp >> 6) & 0x3F));
      out += char(0x80 | (cp & 0x3F));
    }
  };
  for (std::size_t i = begin + 1; i < end - 1; ++i) {
    // The run up to the next escape, in one piece.
    const auto run_end = std::min(s.find('\\', i), end - 1);
    if (run_end > i) {
      out.append(s, i, run_end - i);
      i = run_end;
      if (i >= end - 1) break;
    }
    if (++i >= end - 1) return false;
    switch (s[i]) {
      case '"': out += '"'; break;
      case '\\': out += '\\'; break;
      case '/': out += '/'; break;
      case 'b': out += '\b'; break;
      case 'f': out += '\f'; break;
      case 'n': out += '\n'; break;
      case 'r': out += '\r'; break;
      case 't': out += '\t'; break;
      case 'u': {
        unsigned cp = 0;
        if (!hex4(i + 1, cp)) return false;
        i += 4;
        if (cp >= 0xD800 && cp <= 0xDBFF) {
          unsigned lo = 0;
          if (i + 2 >= end - 1 || s[i + 1] != '\\' || s[i + 2] != 'u' || !hex4(i + 3, lo) ||
              lo < 0xDC00 || lo > 0xDFFF)
            return false;
          i += 6;
          cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
          return false;
        }
        put_utf8(cp);
        break;
      }
      default:
        return false;
    }
  }
  return true;
}

// Finds the byte spans of a document nlohmann accepted at intake. It checks structure, not
// every detail (numbers are taken as runs of number characters): a text it cannot follow makes
// the caller fall back to the parsed document.
class scanner {
 public:
  explicit scanner(std::string_view s) : s_(s) {}
  std::vector<node> nodes;

  bool run() {
    skip_ws();
    if (!value(0)) return false;
    skip_ws();
    return at_ == s_.size();
  }

 private:
  void skip_ws() {
    while (at_ < s_.size() && (s_[at_] == ' ' || s_[at_] == '\t' || s_[at_] == '\n' || s_[at_] == '\r'))
      ++at_;
  }
  bool string_end() {  // at_ on the opening quote; leaves at_ past the closing one
    for (++at_; at_ < s_.size(); ++at_) {
      if (s_[at_] == '\\') {
        ++at_;
      } else if (s_[at_] == '"') {
        ++at_;
        return true;
      }
    }
    return false;
  }
  bool value(int depth) {
    if (depth > max_json_depth || at_ >= s_.size()) return false;
    const std::size_t me = nodes.size();
    nodes.push_back({});
    nodes[me].begin = at_;
    const char c = s_[at_];
    if (c == '{' || c == '[') {
      const bool object = c == '{';
      nodes[me].k = object ? node::kind::object : node::kind::array;
      ++at_;
      skip_ws();
      if (at_ < s_.size() && s_[at_] == (object ? '}' : ']')) {
        ++at_;
      } else {
        for (;;) {
          std::string key;
          if (object) {
            if (at_ >= s_.size() || s_[at_] != '"') return false;
            const std::size_t kb = at_;
            if (!string_end() || !decode_string(s_, kb, at_, key)) return false;
            skip_ws();
            if (at_ >= s_.size() || s_[at_] != ':') return false;
            ++at_;
            skip_ws();
          }
          const std::size_t kid = nodes.size();
          if (!value(depth + 1)) return false;
          nodes[me].kids.push_back(kid);
          if (object) nodes[me].keys.push_back(std::move(key));
          skip_ws();
          if (at_ >= s_.size()) return false;
          if (s_[at_] == ',') {
            ++at_;
            skip_ws();
            continue;
          }
          if (s_[at_] != (object ? '}' : ']')) return false;
          ++at_;
          break;
        }
      }
    } else if (c == '"') {
      nodes[me].k = node::kind::string;
      if (!string_end()) return false;
    } else {
      while (at_ < s_.size() && (std::isalnum(static_cast<unsigned char>(s_[at_])) ||
                                 s_[at_] == '-' || s_[at_] == '+' || s_[at_] == '.'))
        ++at_;
      if (at_ == nodes[me].begin) return false;
    }
    nodes[me].end = at_;
    return true;
  }

  std::string_view s_;
  std::size_t at_ = 0;
};

// The last member named `key` (as a parsed document keeps it), or npos.
std::size_t member(const std::vector<node>& nodes, std::size_t obj, std::string_view key) {
  const auto& o = nodes[obj];
  for (std::size_t i = o.keys.size(); i-- > 0;)
    if (o.keys[i] == key) return o.kids[i];
  return std::string::npos;
}

// The members a parsed document would hold, as positions in kids (and keys): every child of
// an array; for an object, one per distinct key (the last).
std::vector<std::size_t> kept(const node& o) {
  std::vector<std::size_t> out;
  for (std::size_t i = 0; i < o.kids.size(); ++i)
    if (o.k != node::kind::object ||
        std::find(o.keys.begin() + std::ptrdiff_t(i) + 1, o.keys.end(), o.keys[i]) == o.keys.end())
      out.push_back(i);
  return out;
}

// The parsed-document way: as intake checked it; the body is re-serialized.
std::variant<forwarded, std::string> forward_parsed(std::string_view text) {
  if (!json_depth_within(text)) return "stored request nests too deeply";
  json req = json::parse(text, nullptr, false);
  if (req.is_discarded() || !req.is_object()) return "stored request is not a JSON object";
  std::vector<std::string> paths;
  if (req.contains("commands") && req["commands"].is_object() &&
      req["commands"].contains("json_parse") && req["commands"]["json_parse"].is_array())
    for (const auto& p : req["commands"]["json_parse"])
      if (p.is_string()) paths.push_back(p.get<std::string>());
  if (auto err = apply_json_parse(req, paths)) return *err;
  forwarded out;
  out.verbatim = false;
  if (req.contains("headers") && req["headers"].is_object())
    for (const auto& [k, v] : req["headers"].items())
      if (v.is_string()) out.headers.emplace_back(k, v.get<std::string>());
  if (req.contains("params") && !req["params"].is_null()) out.body = req["params"].dump();
  return out;
}

}  // namespace

std::variant<forwarded, std::string> forward_request(std::string_view text) {
  scanner sc(text);
  if (!sc.run() || sc.nodes.empty() || sc.nodes[0].k != node::kind::object)
    return forward_parsed(text);
  const auto& nodes = sc.nodes;

  // json_parse paths, as the parsed document would list them.
  std::vector<json_path> paths;
  if (auto c = member(nodes, 0, "commands");
      c != std::string::npos && nodes[c].k == node::kind::object) {
    if (auto jp = member(nodes, c, "json_parse");
        jp != std::string::npos && nodes[jp].k == node::kind::array) {
      for (auto p : nodes[jp].kids) {
        if (nodes[p].k != node::kind::string) continue;
        std::string t;
        if (!decode_string(text, nodes[p].begin, nodes[p].end, t)) return forward_parsed(text);
        std::string err;
        auto parsed = parse_json_path(t, &err);
        if (!parsed) return err;
        paths.push_back(std::move(*parsed));
      }
    }
  }

  const auto params = member(nodes, 0, "params");
  // Each target string, found on the original text. Anything a span cannot express goes the
  // parsed way (which also gives intake's error messages).
  std::vector<std::size_t> targets;
  for (const auto& p : paths) {
    std::vector<std::size_t> current{0};
    for (const auto& st : p.steps) {
      std::vector<std::size_t> next;
      for (auto n : current) {
        if (auto* key = std::get_if<std::string>(&st)) {
          if (nodes[n].k != node::kind::object) return forward_parsed(text);
          const auto m = member(nodes, n, *key);
          if (m == std::string::npos) return forward_parsed(text);
          next.push_back(m);
        } else if (auto* idx = std::get_if<std::size_t>(&st)) {
          if (nodes[n].k != node::kind::array || *idx >= nodes[n].kids.size())
            return forward_parsed(text);
          next.push_back(nodes[n].kids[*idx]);
        } else {
          if (nodes[n].k != node::kind::array && nodes[n].k != node::kind::object)
            return forward_parsed(text);
          for (auto i : kept(nodes[n])) next.push_back(nodes[n].kids[i]);
        }
      }
      current = std::move(next);
    }
    for (auto t : current) {
      const bool inside = params != std::string::npos && nodes[t].begin >= nodes[params].begin &&
                          nodes[t].end <= nodes[params].end;
      if (nodes[t].k != node::kind::string || !inside ||
          std::find(targets.begin(), targets.end(), t) != targets.end())
        return forward_parsed(text);
      targets.push_back(t);
    }
  }

  forwarded out;
  if (auto h = member(nodes, 0, "headers"); h != std::string::npos && nodes[h].k == node::kind::object) {
    const auto& obj = nodes[h];
    for (auto i : kept(obj)) {
      const auto& v = nodes[obj.kids[i]];
      if (v.k != node::kind::string) continue;
      std::string value;
      if (!decode_string(text, v.begin, v.end, value)) return forward_parsed(text);
      out.headers.emplace_back(obj.keys[i], std::move(value));
    }
    // A parsed document lists members by key order.
    std::sort(out.headers.begin(), out.headers.end(),
              [](const auto& a, const auto& b) { return a.first < b.first; });
  }
  if (params == std::string::npos || text.substr(nodes[params].begin, 4) == "null") return out;

  std::sort(targets.begin(), targets.end(),
            [&](auto a, auto b) { return nodes[a].begin < nodes[b].begin; });
  std::string body;
  body.reserve(nodes[params].end - nodes[params].begin);
  std::size_t from = nodes[params].begin;
  std::string inner;
  for (auto t : targets) {
    // Intake checked that it holds JSON; a text the scanner cannot follow goes the parsed way,
    // which says which path failed.
    if (!decode_string(text, nodes[t].begin, nodes[t].end, inner) || !scanner(inner).run())
      return forward_parsed(text);
    body.append(text.substr(from, nodes[t].begin - from));
    // The held text, without the spaces around it (what a parser would keep anyway).
    const auto first = inner.find_first_not_of(" \t\n\r");
    const auto last = inner.find_last_not_of(" \t\n\r");
    body.append(inner, first, last - first + 1);
    from = nodes[t].end;
  }
  body.append(text.substr(from, nodes[params].end - from));
  out.body = std::move(body);
  return out;
}

}  // namespace resendd
