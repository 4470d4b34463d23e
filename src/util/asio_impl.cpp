// The one translation unit that compiles Boost.Asio, Asio SSL and Beast (separate compilation):
// every other file includes only their declarations, which keeps builds on 2 cores tolerable.
#include <boost/asio/impl/src.hpp>
#include <boost/asio/ssl/impl/src.hpp>
#include <boost/beast/src.hpp>
