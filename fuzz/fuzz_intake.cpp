// libFuzzer target: /resend validation. The first byte chooses an Idempotency-Key length, the
// rest is the body; prepare_job answers a job or an intake_error, never throws, and what it
// accepts delivery can build (forward_request: json_parse commands applied) without an error,
// and scrub (credentials masked in place once it succeeded) as the re-serializing way would.
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <variant>

#include "config/config.h"
#include "queue/forward.h"
#include "queue/intake.h"
#include "queue/routes.h"
#include "store/queue_store.h"
#include "util/log.h"

namespace {
const resendd::route_table& routes() {
  static const resendd::config cfg = resendd::load_config_text(
      "[[routes]]\nname = \"feishu\"\nmatch = "
      "'^https://open\\.feishu\\.cn/open-apis/bitable/v1/apps/[^/?#]+/tables/[^/?#]+/records/"
      "batch_create([?].*)?$'\nprofile = \"feishu\"\nserialize_by = \"bitable_table\"\n"
      "[[routes]]\nname = \"any\"\nmatch = '^https?://.*$'\n",
      {});
  static const resendd::route_table table(cfg);
  return table;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::string_view all(reinterpret_cast<const char*>(data), size);
  const std::size_t key_len = std::min<std::size_t>(data[0] % 40, size - 1);
  const auto key = all.substr(1, key_len);
  const auto body = all.substr(1 + key_len);
  const resendd::sys_time now{resendd::millis{1'800'000'000'000}};
  const auto r = resendd::prepare_job(body, key, routes(), now);
  const auto* job = std::get_if<resendd::store::new_job>(&r);
  if (!job) return 0;
  // Accepted (read with Boost.JSON): delivery builds the request from the stored text (with
  // nlohmann::json where it parses) and applies its json_parse commands without an error.
  if (std::holds_alternative<std::string>(resendd::forward_request(job->request))) __builtin_trap();
  // Once it succeeds, its credentials are masked in the text: a parser reads the same document
  // as from the re-serializing way, and a repeat of the request still matches what is kept.
  const auto spliced = resendd::scrub_request_secrets(job->request);
  const auto reserialized = resendd::scrub_request_secrets_reserialized(job->request);
  if (reserialized && !spliced) __builtin_trap();
  if (spliced) {
    const auto a = nlohmann::json::parse(*spliced, nullptr, false);
    const auto b = nlohmann::json::parse(reserialized.value_or(job->request), nullptr, false);
    if (a.is_discarded() || a != b) __builtin_trap();
    if (!resendd::store::same_request(*spliced, job->request)) __builtin_trap();
  }
  return 0;
}
