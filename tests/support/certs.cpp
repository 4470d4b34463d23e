#include "support/certs.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace resendd::test {
namespace {
void run(const std::string& cmd) {
  if (std::system((cmd + " >/dev/null 2>&1").c_str()) != 0)
    throw std::runtime_error("failed: " + cmd);
}
}  // namespace

std::string read_text(const std::string& file) {
  std::ifstream in(file, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

test_cert make_cert(const temp_dir& dir, const std::string& dns_name) {
  const auto ca = dir.file("ca.pem"), ca_key = dir.file("ca.key");
  if (!std::filesystem::exists(ca))
    run("openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=resendd-test-ca -keyout " +
        ca_key + " -out " + ca);
  const auto base = dir.file("leaf-" + dns_name);
  const std::string san =
      "subjectAltName=DNS:" + dns_name + (dns_name == "localhost" ? ",IP:127.0.0.1" : "");
  dir.write("leaf-" + dns_name + ".ext", san + "\n");
  run("openssl req -newkey rsa:2048 -nodes -subj /CN=" + dns_name + " -keyout " + base +
      ".key -out " + base + ".csr");
  run("openssl x509 -req -in " + base + ".csr -CA " + ca + " -CAkey " + ca_key +
      " -CAcreateserial -days 2 -extfile " + base + ".ext -out " + base + ".pem");
  return {base + ".pem", base + ".key"};
}

rsa_pair make_rsa_pair(const temp_dir& dir) {
  const auto priv = dir.file("jwt.key"), pub = dir.file("jwt.pub"), pk1 = dir.file("jwt-pkcs1.key");
  run("openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out " + priv);
  run("openssl pkey -in " + priv + " -pubout -out " + pub);
  run("openssl rsa -in " + priv + " -traditional -out " + pk1);
  return {read_text(priv), read_text(pk1), read_text(pub)};
}

}  // namespace resendd::test
