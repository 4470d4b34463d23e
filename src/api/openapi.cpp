#include "api/openapi.h"

#include <nlohmann/json.hpp>

namespace resendd {
namespace {

// The document without its servers; $refs point into components.
constexpr const char* document = R"json({
  "openapi": "3.0.3",
  "info": {
    "title": "resendd",
    "version": "",
    "description": "A persistent retry queue for chat bots: hand it a failed request (a Feishu Bitable write, say) and it is delivered, with backoff, until the destination accepts it or the job is declared dead. Also mints Coze OAuth access tokens."
  },
  "security": [{"bearer": []}],
  "paths": {
    "/resend": {
      "post": {
        "operationId": "resend",
        "summary": "Queue a request for delivery",
        "description": "The request is committed to disk before the answer. With Prefer: wait=N (or ?wait=N, N <= 10) the answer is the destination's own when the first attempt finishes within N seconds.",
        "parameters": [
          {"name": "Idempotency-Key", "in": "header", "required": false, "description": "The same key with the same body answers the first job; with another body 422.", "schema": {"type": "string", "maxLength": 256}},
          {"name": "Prefer", "in": "header", "required": false, "description": "wait=N: answer with the destination's answer if it comes within N seconds (at most 10).", "schema": {"type": "string", "example": "wait=5"}},
          {"name": "wait", "in": "query", "required": false, "schema": {"type": "integer", "minimum": 0, "maximum": 10}}
        ],
        "requestBody": {
          "required": true,
          "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ResendRequest"}}}
        },
        "responses": {
          "202": {"description": "Committed; delivery goes on", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Accepted"}}}},
          "200": {"description": "With Prefer: wait, the destination's status and body (any status it answered)", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/FirstAnswer"}}}},
          "400": {"$ref": "#/components/responses/Error"},
          "401": {"$ref": "#/components/responses/Error"},
          "403": {"$ref": "#/components/responses/Error"},
          "413": {"$ref": "#/components/responses/Error"},
          "422": {"$ref": "#/components/responses/Error"},
          "503": {"$ref": "#/components/responses/Error"}
        }
      }
    },
    "/token": {
      "post": {
        "operationId": "token",
        "summary": "A Coze OAuth access token (JWT bearer flow), cached",
        "requestBody": {
          "required": true,
          "content": {"application/json": {"schema": {"$ref": "#/components/schemas/TokenRequest"}}}
        },
        "responses": {
          "200": {"description": "Coze's answer", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/TokenResponse"}}}},
          "400": {"$ref": "#/components/responses/Error"},
          "401": {"$ref": "#/components/responses/Error"},
          "502": {"$ref": "#/components/responses/Error"},
          "503": {"$ref": "#/components/responses/Error"}
        }
      }
    },
    "/jobs": {
      "get": {
        "operationId": "listJobs",
        "summary": "Jobs, newest first",
        "parameters": [
          {"name": "state", "in": "query", "required": false, "schema": {"$ref": "#/components/schemas/State"}},
          {"name": "limit", "in": "query", "required": false, "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 50}}
        ],
        "responses": {
          "200": {"description": "Jobs", "content": {"application/json": {"schema": {"type": "array", "items": {"$ref": "#/components/schemas/Job"}}}}},
          "400": {"$ref": "#/components/responses/Error"},
          "401": {"$ref": "#/components/responses/Error"}
        }
      }
    },
    "/jobs/{id}": {
      "get": {
        "operationId": "getJob",
        "summary": "A job with its attempt log (credentials masked)",
        "parameters": [{"$ref": "#/components/parameters/JobId"}],
        "responses": {
          "200": {"description": "The job", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Job"}}}},
          "401": {"$ref": "#/components/responses/Error"},
          "404": {"$ref": "#/components/responses/Error"}
        }
      }
    },
    "/jobs/{id}/retry": {
      "post": {
        "operationId": "retryJob",
        "summary": "A dead or cancelled job back to the queue, with a fresh attempt budget",
        "parameters": [
          {"$ref": "#/components/parameters/JobId"},
          {"name": "force", "in": "query", "required": false, "description": "Also a job that needs reconciliation", "schema": {"type": "boolean"}}
        ],
        "responses": {
          "200": {"$ref": "#/components/responses/Action"},
          "401": {"$ref": "#/components/responses/Error"},
          "404": {"$ref": "#/components/responses/Error"},
          "409": {"$ref": "#/components/responses/Error"}
        }
      }
    },
    "/jobs/{id}/cancel": {
      "post": {
        "operationId": "cancelJob",
        "summary": "A queued or delivering job cancelled",
        "parameters": [{"$ref": "#/components/parameters/JobId"}],
        "responses": {
          "200": {"$ref": "#/components/responses/Action"},
          "401": {"$ref": "#/components/responses/Error"},
          "404": {"$ref": "#/components/responses/Error"},
          "409": {"$ref": "#/components/responses/Error"}
        }
      }
    },
    "/jobs/retry": {
      "post": {
        "operationId": "retryDead",
        "summary": "Every dead job (but those that need reconciliation) back to the queue",
        "parameters": [{"name": "state", "in": "query", "required": true, "schema": {"type": "string", "enum": ["dead"]}}],
        "responses": {
          "200": {"$ref": "#/components/responses/Count"},
          "401": {"$ref": "#/components/responses/Error"}
        }
      }
    },
    "/jobs/purge": {
      "post": {
        "operationId": "purge",
        "summary": "Finished jobs older than an age deleted",
        "parameters": [
          {"name": "older_than", "in": "query", "required": true, "schema": {"type": "string", "example": "7d"}},
          {"name": "state", "in": "query", "required": false, "description": "Comma-separated; default succeeded,cancelled", "schema": {"type": "string"}}
        ],
        "responses": {
          "200": {"$ref": "#/components/responses/Count"},
          "400": {"$ref": "#/components/responses/Error"},
          "401": {"$ref": "#/components/responses/Error"},
          "409": {"$ref": "#/components/responses/Error"}
        }
      }
    },
    "/healthz": {
      "get": {"operationId": "healthz", "summary": "Liveness", "security": [], "responses": {"200": {"description": "Alive"}}}
    },
    "/readyz": {
      "get": {"operationId": "readyz", "summary": "Readiness: commits succeed and the claim loop runs", "security": [],
              "responses": {"200": {"description": "Ready"}, "503": {"$ref": "#/components/responses/Error"}}}
    }
  },
  "components": {
    "securitySchemes": {
      "bearer": {"type": "http", "scheme": "bearer", "description": "One of server.api_tokens"}
    },
    "parameters": {
      "JobId": {"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}
    },
    "responses": {
      "Error": {"description": "An error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
      "Action": {"description": "The job's new state", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Accepted"}}}},
      "Count": {"description": "How many jobs", "content": {"application/json": {"schema": {"type": "object", "required": ["count"], "properties": {"count": {"type": "integer"}}}}}}
    },
    "schemas": {
      "State": {"type": "string", "enum": ["queued", "delivering", "succeeded", "dead", "cancelled"]},
      "ResendRequest": {
        "type": "object",
        "required": ["location"],
        "properties": {
          "location": {"type": "string", "format": "uri", "description": "The destination URL; it must match a configured route", "example": "https://open.feishu.cn/open-apis/bitable/v1/apps/APP/tables/TBL/records/batch_create"},
          "method": {"type": "string", "description": "HTTP method (default POST); the route must allow it", "example": "POST"},
          "headers": {"type": "object", "additionalProperties": {"type": "string"}, "description": "Headers sent with the request", "example": {"Authorization": "Bearer t-..."}},
          "params": {"description": "The JSON body, sent byte for byte except at json_parse targets"},
          "commands": {
            "type": "object",
            "properties": {
              "json_parse": {"type": "array", "items": {"type": "string"}, "description": "Paths of strings holding JSON, sent as JSON", "example": ["$.params.records[*].fields"]}
            }
          }
        }
      },
      "Accepted": {"type": "object", "required": ["id", "state"], "properties": {"id": {"type": "string"}, "state": {"$ref": "#/components/schemas/State"}}},
      "FirstAnswer": {
        "type": "object",
        "required": ["id", "state", "status", "response"],
        "properties": {
          "id": {"type": "string"},
          "state": {"$ref": "#/components/schemas/State"},
          "status": {"type": "integer", "description": "The destination's HTTP status"},
          "response": {"description": "The destination's body: JSON when it is JSON, else a string"}
        }
      },
      "Error": {"type": "object", "required": ["error", "code"], "properties": {"error": {"type": "string"}, "code": {"type": "string"}}},
      "TokenRequest": {
        "type": "object",
        "required": ["public_key", "coze_api_key"],
        "properties": {
          "public_key": {"type": "string", "description": "The key id (kid)"},
          "coze_api_key": {"type": "string", "description": "The Coze app id"},
          "duration_seconds": {"type": "integer", "minimum": 1, "maximum": 86399}
        }
      },
      "TokenResponse": {
        "type": "object",
        "required": ["access_token", "expires_in"],
        "properties": {
          "access_token": {"type": "string"},
          "expires_in": {"type": "integer", "description": "Unix time at which it expires"},
          "token_type": {"type": "string"}
        }
      },
      "Attempt": {
        "type": "object",
        "properties": {
          "n": {"type": "integer"}, "started_at": {"type": "string"}, "duration_ms": {"type": "integer"},
          "http_status": {"type": "integer", "nullable": true}, "feishu_code": {"type": "integer", "nullable": true},
          "outcome": {"type": "string"}, "error": {"type": "string", "nullable": true}, "response": {"type": "string", "nullable": true}
        }
      },
      "Job": {
        "type": "object",
        "required": ["id", "state"],
        "properties": {
          "id": {"type": "string"}, "state": {"$ref": "#/components/schemas/State"}, "route": {"type": "string"},
          "method": {"type": "string"}, "location": {"type": "string"}, "attempts": {"type": "integer"},
          "created_at": {"type": "string"}, "next_attempt_at": {"type": "string"},
          "last_error": {"type": "string", "nullable": true},
          "attempt_log": {"type": "array", "items": {"$ref": "#/components/schemas/Attempt"}}
        },
        "additionalProperties": true
      }
    }
  }
})json";

}  // namespace

std::string openapi_document(const config& cfg) {
  auto doc = nlohmann::json::parse(document);
  doc["info"]["version"] = RESENDD_VERSION;
  doc["servers"] = nlohmann::json::array(
      {{{"url", cfg.server.public_url.empty() ? local_base_url(cfg)
                                              : cfg.server.public_url}}});
  return doc.dump(2);
}

}  // namespace resendd
