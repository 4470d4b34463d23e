# Installs the example config as the service's config, once: an existing file is the operator's
# and is never overwritten. The one change from the example: the database lives in the service's
# state directory (the example's relative var/resendd.db would land in /var/lib/resendd/var/).
# Variables: SRC (config/resendd.toml), DST (e.g. /etc/resendd/resendd.toml), DB.
set(dst "$ENV{DESTDIR}${DST}")
if(EXISTS "${dst}")
  message(STATUS "Kept: ${dst} (already there)")
  return()
endif()
file(READ "${SRC}" text)
string(REPLACE "path = \"var/resendd.db\"" "path = \"${DB}\"" text "${text}")
get_filename_component(dir "${dst}" DIRECTORY)
file(MAKE_DIRECTORY "${dir}")
file(WRITE "${dst}" "${text}")
message(STATUS "Installing: ${dst}")
