// Boost.JSON compiled once, here, for the whole core library (it has no Debian shared library).
#include <boost/json/src.hpp>
