#include "util/memory.h"

#include <dlfcn.h>
#include <malloc.h>

namespace resendd {
namespace {

using release_fn = void (*)();

// tcmalloc's C entry point, when tcmalloc is in the process (it defines malloc for everyone).
release_fn tcmalloc_release() {
  static const release_fn fn =
      reinterpret_cast<release_fn>(::dlsym(RTLD_DEFAULT, "MallocExtension_ReleaseFreeMemory"));
  return fn;
}

}  // namespace

std::string_view allocator_name() { return tcmalloc_release() ? "tcmalloc" : "glibc"; }

void release_free_memory() {
  if (const auto fn = tcmalloc_release())
    fn();
  else
    ::malloc_trim(0);
}

}  // namespace resendd
