#include "util/utf8.h"

#include <gtest/gtest.h>

using namespace resendd;

TEST(Utf8, ValidatesAsRfc3629Says) {
  EXPECT_TRUE(valid_utf8(""));
  EXPECT_TRUE(valid_utf8("plain"));
  EXPECT_TRUE(valid_utf8("金额 €  \xf0\x9f\x98\x80"));
  for (const char* bad : {"\xff", "\xc0\xaf", "\xe0\x80\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80",
                          "\xe9\x87", "a\x80", "\xf8\x88\x80\x80\x80"})
    EXPECT_FALSE(valid_utf8(bad)) << bad;
}

TEST(Utf8, CutsOnCharacterBoundaries) {
  const std::string s = "ab金额";  // 2 + 3 + 3 bytes
  EXPECT_EQ(utf8_prefix(s, 100), s);
  EXPECT_EQ(utf8_prefix(s, 2), "ab");
  EXPECT_EQ(utf8_prefix(s, 3), "ab");
  EXPECT_EQ(utf8_prefix(s, 4), "ab");
  EXPECT_EQ(utf8_prefix(s, 5), "ab金");
  EXPECT_EQ(utf8_prefix(s, 7), "ab金");
  EXPECT_EQ(utf8_char_at(s, 2), "金");
  EXPECT_EQ(utf8_char_at(s, 0), "a");
  EXPECT_EQ(utf8_char_at("\xe9\x87", 0), "\xe9");  // cut short: one byte
  EXPECT_EQ(utf8_char_at(s, 99), "");
}

TEST(Utf8, Base64) {
  EXPECT_EQ(base64_encode(""), "");
  EXPECT_EQ(base64_encode("f"), "Zg==");
  EXPECT_EQ(base64_encode("foob"), "Zm9vYg==");
  EXPECT_EQ(base64_encode(std::string("\xff\xd8\xff\xe0\x00JFIF", 9)), "/9j/4ABKRklG");
}
