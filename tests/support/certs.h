#pragma once
// Test TLS material made with the openssl command line: a CA and server certificates it signs.
#include <string>

#include "support/temp_dir.h"

namespace resendd::test {

struct test_cert {
  std::string cert_file;  // PEM certificate (leaf)
  std::string key_file;   // PEM private key
};

// Creates ca.pem/ca.key in dir (once) and a leaf for `dns_name` (also valid for 127.0.0.1 when
// dns_name is "localhost"). Returns the leaf; the CA is dir.file("ca.pem").
test_cert make_cert(const temp_dir& dir, const std::string& dns_name);

// An RSA key pair: PKCS#8 private key and its public key (PEM files), for JWT tests.
struct rsa_pair {
  std::string private_pem;        // PKCS#8
  std::string private_pkcs1_pem;  // the same key as "BEGIN RSA PRIVATE KEY"
  std::string public_pem;
};
rsa_pair make_rsa_pair(const temp_dir& dir);

std::string read_text(const std::string& file);

}  // namespace resendd::test
