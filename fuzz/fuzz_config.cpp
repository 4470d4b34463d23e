// libFuzzer target: the config reader. Bytes in as TOML; a config or a config_error out, never
// anything else.
#include <cstdint>
#include <string>

#include "config/config.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    (void)resendd::load_config_text(text, {});
  } catch (const resendd::config_error&) {
  }
  return 0;
}
