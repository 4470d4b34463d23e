#include "queue/forward.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "queue/json_path.h"
#include "util/json_depth.h"
#include "util/json_spans.h"

namespace resendd {
namespace {

using nlohmann::json;

using node = json_span;

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
    if (o.k != json_span::kind::object ||
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
  const auto scanned = scan_json_spans(text);
  if (!scanned || (*scanned)[0].k != json_span::kind::object) return forward_parsed(text);
  const auto& nodes = *scanned;

  // json_parse paths, as the parsed document would list them.
  std::vector<json_path> paths;
  if (auto c = member(nodes, 0, "commands");
      c != std::string::npos && nodes[c].k == json_span::kind::object) {
    if (auto jp = member(nodes, c, "json_parse");
        jp != std::string::npos && nodes[jp].k == json_span::kind::array) {
      for (auto p : nodes[jp].kids) {
        if (nodes[p].k != json_span::kind::string) continue;
        std::string t;
        if (!decode_json_string(text, nodes[p].begin, nodes[p].end, t)) return forward_parsed(text);
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
          if (nodes[n].k != json_span::kind::object) return forward_parsed(text);
          const auto m = member(nodes, n, *key);
          if (m == std::string::npos) return forward_parsed(text);
          next.push_back(m);
        } else if (auto* idx = std::get_if<std::size_t>(&st)) {
          if (nodes[n].k != json_span::kind::array || *idx >= nodes[n].kids.size())
            return forward_parsed(text);
          next.push_back(nodes[n].kids[*idx]);
        } else {
          if (nodes[n].k != json_span::kind::array && nodes[n].k != json_span::kind::object)
            return forward_parsed(text);
          for (auto i : kept(nodes[n])) next.push_back(nodes[n].kids[i]);
        }
      }
      current = std::move(next);
    }
    for (auto t : current) {
      const bool inside = params != std::string::npos && nodes[t].begin >= nodes[params].begin &&
                          nodes[t].end <= nodes[params].end;
      if (nodes[t].k != json_span::kind::string || !inside ||
          std::find(targets.begin(), targets.end(), t) != targets.end())
        return forward_parsed(text);
      targets.push_back(t);
    }
  }

  forwarded out;
  if (auto h = member(nodes, 0, "headers");
      h != std::string::npos && nodes[h].k == json_span::kind::object) {
    const auto& obj = nodes[h];
    for (auto i : kept(obj)) {
      const auto& v = nodes[obj.kids[i]];
      if (v.k != json_span::kind::string) continue;
      std::string value;
      if (!decode_json_string(text, v.begin, v.end, value)) return forward_parsed(text);
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
    if (!decode_json_string(text, nodes[t].begin, nodes[t].end, inner) || !scan_json_spans(inner))
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
