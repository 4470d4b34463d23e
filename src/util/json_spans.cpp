#include "util/json_spans.h"

#include <algorithm>
#include <cctype>

#include "util/json_depth.h"

namespace resendd {

bool decode_json_string(std::string_view s, std::size_t begin, std::size_t end, std::string& out) {
  out.clear();
  if (end - begin < 2 || s[begin] != '"' || s[end - 1] != '"') return false;
  auto hex4 = [&](std::size_t at, unsigned& v) {
    if (at + 4 > end - 1) return false;
    v = 0;
    for (std::size_t i = at; i < at + 4; ++i) {
      const char c = s[i];
      v <<= 4;
      if (c >= '0' && c <= '9')
        v |= unsigned(c - '0');
      else if (c >= 'a' && c <= 'f')
        v |= unsigned(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F')
        v |= unsigned(c - 'A' + 10);
      else
        return false;
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
      case '"':
        out += '"';
        break;
      case '\\':
        out += '\\';
        break;
      case '/':
        out += '/';
        break;
      case 'b':
        out += '\b';
        break;
      case 'f':
        out += '\f';
        break;
      case 'n':
        out += '\n';
        break;
      case 'r':
        out += '\r';
        break;
      case 't':
        out += '\t';
        break;
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

namespace {

class scanner {
 public:
  explicit scanner(std::string_view s) : s_(s) {}
  std::vector<json_span> nodes;

  bool run() {
    skip_ws();
    if (!value(0)) return false;
    skip_ws();
    return at_ == s_.size();
  }

 private:
  void skip_ws() {
    while (at_ < s_.size() &&
           (s_[at_] == ' ' || s_[at_] == '\t' || s_[at_] == '\n' || s_[at_] == '\r'))
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
      nodes[me].k = object ? json_span::kind::object : json_span::kind::array;
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
            if (!string_end() || !decode_json_string(s_, kb, at_, key)) return false;
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
      nodes[me].k = json_span::kind::string;
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

}  // namespace

std::optional<std::vector<json_span>> scan_json_spans(std::string_view text) {
  scanner sc(text);
  if (!sc.run() || sc.nodes.empty()) return std::nullopt;
  return std::move(sc.nodes);
}

}  // namespace resendd
