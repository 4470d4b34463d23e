#pragma once
// The OpenAPI 3.0 description of the HTTP API (GET /openapi.json, `resendd openapi`): what a Coze
// plugin is created from by importing it. The server URL is server.public_url, else the listen
// address.
#include <string>

#include "config/config.h"

namespace resendd {

std::string openapi_document(const config& cfg);

}  // namespace resendd
