// TLS to destinations: the chain is verified against the system store plus delivery.ca_file, and
// the certificate must name the host.
#include <gtest/gtest.h>

#include <filesystem>

#include "support/certs.h"
#include "support/harness.h"

using namespace resendd::test;

namespace {
std::string tls_config(const temp_dir& dir) {
  return R"([server]
listen = "127.0.0.1:0"
[delivery]
retry_base = "10ms"
retry_cap = "20ms"
max_attempts = 2
ca_file = ")" +
         dir.file("ca.pem") + R"("
[[routes]]
name = "tls"
match = '^https://localhost:\d+/.*$'
allow_private_networks = true
)";
}
}  // namespace

TEST(Tls, DestinationSignedByTheConfiguredCaSucceeds) {
  temp_dir dir;
  const auto cert = make_cert(dir, "localhost");
  fake_server dest(nullptr, &cert);
  daemon_process d(dir, tls_config(dir));
  const auto id = job_id(post_resend(d, resend_body(dest.url("/secure"))));
  ASSERT_TRUE(d.wait_log("job " + id + " attempt 1: succeeded")) << d.log();
  ASSERT_EQ(dest.count(), 1u);
  EXPECT_TRUE(nlohmann::json::parse(dest.requests()[0].body)["records"][0]["fields"].is_object());
}

TEST(Tls, JobsToOneOriginShareOneConnectionAndOneHandshake) {
  temp_dir dir;
  const auto cert = make_cert(dir, "localhost");
  fake_server dest(nullptr, &cert);
  daemon_process d(dir, tls_config(dir));
  for (int i = 0; i < 3; ++i) {
    const auto id = job_id(post_resend(d, resend_body(dest.url("/secure"))));
    ASSERT_TRUE(d.wait_log("job " + id + " attempt 1: succeeded")) << d.log();
  }
  const auto got = dest.requests();
  ASSERT_EQ(got.size(), 3u);
  for (const auto& r : got) EXPECT_EQ(r.connection, 1u);  // kept alive, reused
}

TEST(Tls, CertificateForAnotherHostNeverReceivesTheRequest) {
  temp_dir dir;
  const auto cert = make_cert(dir, "other.example");
  fake_server dest(nullptr, &cert);
  daemon_process d(dir, tls_config(dir));
  const auto id = job_id(post_resend(d, resend_body(dest.url("/secure"))));
  ASSERT_TRUE(d.wait_log("job " + id + " attempt 2: dead")) << d.log();
  EXPECT_EQ(dest.count(), 0u);
  const auto err =
      sql_value(d.db_path(), "select error from attempts where job_id = '" + id + "' and n = 1");
  EXPECT_NE(err.find("TLS handshake"), std::string::npos) << err;
}

TEST(Tls, UnknownCaIsRefused) {
  temp_dir dir, other;
  const auto cert = make_cert(other, "localhost");  // signed by a CA the daemon does not trust
  make_cert(dir, "unused");                         // creates dir/ca.pem, a different CA
  fake_server dest(nullptr, &cert);
  daemon_process d(dir, tls_config(dir));
  const auto id = job_id(post_resend(d, resend_body(dest.url("/secure"))));
  ASSERT_TRUE(d.wait_log("job " + id + " attempt 2: dead")) << d.log();
  EXPECT_EQ(dest.count(), 0u);
}

TEST(Tls, UnusableCertificatesStopServeAndCheckConfigAlikeBeforeTheStoreIsOpened) {
  // Found by hand: a CA bundle or listener certificate that OpenSSL cannot read passed
  // check-config, and serve failed with exit 1 only after it had opened the store.
  temp_dir dir;
  const auto cert = make_cert(dir, "localhost");
  const auto other = make_cert(dir, "other.example");
  dir.write("junk.pem", "not a certificate\n");
  struct bad_case {
    std::string server, delivery, expected;
  };
  const std::vector<bad_case> cases = {
      {"", "ca_file = \"" + dir.file("junk.pem") + "\"\n", "delivery.ca_file"},
      {"tls_cert = \"" + dir.file("junk.pem") + "\"\ntls_key = \"" + cert.key_file + "\"\n", "",
       "server.tls_cert/tls_key"},
      // A key that belongs to another certificate.
      {"tls_cert = \"" + cert.cert_file + "\"\ntls_key = \"" + other.key_file + "\"\n", "",
       "mismatch"},
  };
  for (const auto& c : cases) {
    const auto text = "[server]\nlisten = \"127.0.0.1:0\"\n" + c.server + "[delivery]\n" +
                      c.delivery + "[store]\npath = \"" + dir.file("c.db") + "\"\n";
    dir.write("c.toml", text);
    for (const char* command : {"check-config", "serve"}) {
      const auto r = run_resendd(dir, {command, "--config", dir.file("c.toml")});
      EXPECT_EQ(r.status, 2) << command << ": " << r.output;
      EXPECT_NE(r.output.find(c.expected), std::string::npos) << command << ": " << r.output;
    }
    EXPECT_FALSE(std::filesystem::exists(dir.file("c.db"))) << text;
  }
}
