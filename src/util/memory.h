#pragma once
// Giving freed memory back to the system, whichever allocator the binary runs on.
//
// The daemon links tcmalloc (CMake option RESENDD_TCMALLOC); tests, fuzzers and sanitizer builds
// run on glibc's malloc. The core library knows neither at build time: it asks at run time.

#include <string_view>

namespace resendd {

// The allocator serving malloc in this process: "tcmalloc" or "glibc".
std::string_view allocator_name();

// Returns the free memory the allocator holds to the system (after a large parse, say):
// tcmalloc's page heap, or glibc's arenas (malloc_trim). Thread-safe; costs a few milliseconds
// on a large heap, so not for every request.
void release_free_memory();

}  // namespace resendd
